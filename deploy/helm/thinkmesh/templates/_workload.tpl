{{/*
The Deployment every thinkmesh component runs, and the objects around it (Service, HPA, PDB).
Params: the component context, (dict "root" $ "name" NAME "values" VALUES) merged with its row of the wiring
table; "values" is the component's values as its pods use them (the trainer's with trainer.jobMode applied in
training.mode job), .root.Values.NAME when absent.
*/}}

{{/* A tiny gRPC health client for probes when TLS is on: the kubelet's own gRPC probe speaks plaintext only.
It presents the pod's certificate (mutual TLS) and checks the name the Service is reached by. */}}
{{- define "thinkmesh.tlsHealthScript" -}}
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
read = lambda name: open(sys.argv[1] + "/" + name, "rb").read()
creds = grpc.ssl_channel_credentials(read("ca.crt"), read("tls.key"), read("tls.crt"))
channel = grpc.secure_channel(sys.argv[2], creds, options=[("grpc.ssl_target_name_override", sys.argv[3])])
service = sys.argv[5] if len(sys.argv) > 5 else ""
reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=float(sys.argv[4]))
sys.exit(0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1)
{{- end }}

{{/* One probe: a full handler from values is used as given; otherwise the gRPC health check (or its TLS
twin) with the timings from values. Nothing when values give nothing. Params: context + "probe".
Liveness asks for the health name thinkmesh.liveness, SERVING while the server answers at all: a model pod that
is reloading or draining is unready, not dead. */}}
{{- define "thinkmesh.probe" -}}
{{- $c := index .root.Values .name }}
{{- if get . "pool" }}{{- $c = .values }}{{- end }}
{{- $p := index $c.probes .probe | default dict }}
{{- /* The search is ready only while a worker beats (its health follows them); started once it answers. */}}
{{- $live := or (eq .probe "liveness") (and (eq .probe "startup") (eq .name "search")) }}
{{- if or $p.exec $p.grpc $p.httpGet $p.tcpSocket }}
{{- toYaml $p }}
{{- else if and (eq .name "worker") $p }}
{{- /* The worker's HTTP health (services/search/worker): ready once consuming, live while its loop beats. */}}
httpGet:
  path: {{ ternary "/livez" "/readyz" (eq .probe "liveness") }}
  port: health
{{ toYaml $p }}
{{- else if and .grpc $p }}
{{- if .root.Values.tls.enabled }}
exec:
  command:
    - python3
    - -c
    - {{ include "thinkmesh.tlsHealthScript" . | toJson }}
    - {{ .root.Values.tls.mountPath | quote }}
    - {{ printf "127.0.0.1:%d" (int $c.service.port) | quote }}
    - {{ include "thinkmesh.serviceHost" . | quote }}
    - {{ default 1 $p.timeoutSeconds | toString | quote }}
    {{- if $live }}
    - thinkmesh.liveness
    {{- end }}
{{- else }}
grpc:
  port: {{ $c.service.port }}
  {{- if $live }}
  service: thinkmesh.liveness
  {{- end }}
{{- end }}
{{ toYaml $p }}
{{- end }}
{{- end }}

{{- define "thinkmesh.podAnnotations" -}}
{{- $c := index .root.Values .name }}
{{- if get . "pool" }}{{- $c = .values }}{{- end }}
checksum/config: {{ include "thinkmesh.configMap" . | sha256sum }}
{{- if .broker }}
checksum/broker: {{ include "thinkmesh.brokerChecksum" .root }}
{{- end }}
{{- if .root.Values.metrics.enabled }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .root.Values.metrics.port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with $c.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Scheduling, identity and the hardened pod-level settings shared by Deployments and the StatefulSet. */}}
{{- define "thinkmesh.podSpecCommon" -}}
{{- $c := .values | default (index .root.Values .name) }}
{{- if and (eq .name "trainer") (include "thinkmesh.trainerAccount" .root) }}
{{- /* The trainer's own account: its Roles may patch the model Deployments, run training Jobs (trainer-rbac.yaml). */}}
serviceAccountName: {{ include "thinkmesh.componentName" . }}
automountServiceAccountToken: true
{{- else }}
serviceAccountName: {{ include "thinkmesh.serviceAccountName" .root }}
automountServiceAccountToken: {{ .root.Values.serviceAccount.automountToken }}
{{- end }}
{{- /* Service links would inject THINKMESH_<SVC>_PORT=tcp://… into every pod: exactly our settings' names. */}}
enableServiceLinks: false
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with $c.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $c.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
terminationGracePeriodSeconds: {{ $c.terminationGracePeriodSeconds }}
securityContext:
  {{- toYaml $c.podSecurityContext | nindent 2 }}
{{- with $c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "thinkmesh.deployment" -}}
{{- $root := .root }}
{{- $c := .values | default (index $root.Values .name) }}
{{- if $c.enabled }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "thinkmesh.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "thinkmesh.labels" . | nindent 4 }}
spec:
  {{- if not (and .hpa (or $c.autoscaling.enabled (include "thinkmesh.keda" $c))) }}
  {{- /* With an HPA (or KEDA's) the count is the HPA's: a replicas field here would reset it on every upgrade. */}}
  replicas: {{ $c.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    {{- toYaml (default .strategy $c.strategy) | nindent 4 }}
  selector:
    matchLabels:
      {{- include "thinkmesh.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "thinkmesh.labels" . | nindent 8 }}
        {{- with $c.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        {{- include "thinkmesh.podAnnotations" . | trim | nindent 8 }}
    spec:
      {{- include "thinkmesh.podSpecCommon" . | trim | nindent 6 }}
      {{- if and .models (not $c.config.model) }}
      initContainers:
        {{- /* An empty store is normal right after install: wait here (no probe runs yet) until the seed Job
        (or an operator) has made a version current, instead of crash-looping under the startup probe. */}}
        - name: wait-for-model
          image: {{ include "thinkmesh.image" . | quote }}
          imagePullPolicy: {{ $c.image.pullPolicy }}
          command: [thinkmesh]
          args: [models, wait, --kind, {{ .models }}, --store, {{ $root.Values.store.mountPath | quote }}]
          env:
            - name: HOME
              value: /tmp
          resources:
            requests: {cpu: 10m, memory: 64Mi}
            limits: {cpu: 200m, memory: 256Mi}
          securityContext:
            {{- toYaml $c.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            - name: store
              mountPath: {{ $root.Values.store.mountPath }}
              readOnly: true
      {{- end }}
      containers:
        - name: {{ .name }}
          image: {{ include "thinkmesh.image" . | quote }}
          imagePullPolicy: {{ $c.image.pullPolicy }}
          command: [thinkmesh]
          args:
            {{- range .args }}
            - {{ . }}
            {{- end }}
            {{- if .grpc }}
            - --host
            - 0.0.0.0
            - --port
            - {{ $c.service.port | quote }}
            {{- end }}
          ports:
            {{- if .grpc }}
            - name: grpc
              containerPort: {{ $c.service.port }}
              protocol: TCP
            {{- end }}
            {{- if eq .name "worker" }}
            - name: health
              containerPort: {{ $c.healthPort }}
              protocol: TCP
            {{- end }}
            {{- if $root.Values.metrics.enabled }}
            - name: metrics
              containerPort: {{ $root.Values.metrics.port }}
              protocol: TCP
            {{- end }}
          envFrom:
            - configMapRef:
                name: {{ include "thinkmesh.componentName" . }}
          env:
            # The root filesystem is read-only: caches (Hugging Face, Triton, pip) go to the /tmp emptyDir.
            - name: HOME
              value: /tmp
            {{- if .broker }}
            {{- include "thinkmesh.brokerEnv" . | nindent 12 }}
            {{- end }}
            {{- with $c.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- range $kind := list "startup" "readiness" "liveness" }}
          {{- $probe := include "thinkmesh.probe" (dict "root" $root "name" $.name "grpc" $.grpc "probe" $kind "pool" (get $ "pool") "values" $c) | trim }}
          {{- if $probe }}
          {{ $kind }}Probe:
            {{- $probe | nindent 12 }}
          {{- end }}
          {{- end }}
          lifecycle:
            preStop:
              sleep:
                seconds: {{ $root.Values.preStopSleepSeconds }}
          resources:
            {{- toYaml $c.resources | nindent 12 }}
          securityContext:
            {{- toYaml $c.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if $c.shmSizeLimit }}
            - name: shm
              mountPath: /dev/shm
            {{- end }}
            {{- if .store }}
            - name: store
              mountPath: {{ $root.Values.store.mountPath }}
              readOnly: {{ eq .store "ro" }}
            {{- end }}
            {{- if $root.Values.tls.enabled }}
            - name: tls
              mountPath: {{ $root.Values.tls.mountPath }}
              readOnly: true
            {{- end }}
            {{- if and .auth $root.Values.auth.enabled }}
            - name: auth
              mountPath: /etc/thinkmesh/auth
              readOnly: true
            {{- end }}
            {{- if and (eq .name "trainer") (include "thinkmesh.trainingJobs" $root) }}
            - name: training-job
              mountPath: {{ include "thinkmesh.trainingJobDir" $root }}
              readOnly: true
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ $c.tmpSizeLimit }}
        {{- if $c.shmSizeLimit }}
        - name: shm
          emptyDir:
            medium: Memory
            sizeLimit: {{ $c.shmSizeLimit }}
        {{- end }}
        {{- if .store }}
        - name: store
          persistentVolumeClaim:
            claimName: {{ include "thinkmesh.storeClaimName" $root }}
            readOnly: {{ eq .store "ro" }}
        {{- end }}
        {{- if $root.Values.tls.enabled }}
        - name: tls
          secret:
            secretName: {{ include "thinkmesh.tlsSecretName" . }}
            defaultMode: 0440
        {{- end }}
        {{- if and .auth $root.Values.auth.enabled }}
        - name: auth
          secret:
            secretName: {{ include "thinkmesh.authSecretName" $root }}
            defaultMode: 0440
            items:
              - key: {{ $root.Values.auth.tokensKey }}
                path: {{ $root.Values.auth.tokensKey }}
        {{- end }}
        {{- if and (eq .name "trainer") (include "thinkmesh.trainingJobs" $root) }}
        {{- /* Mounted whole (no subPath), so an upgrade's new template reaches the next stage without a restart. */}}
        - name: training-job
          configMap:
            name: {{ include "thinkmesh.trainingJobConfigMap" $root }}
            defaultMode: 0444
        {{- end }}
{{- end }}
{{- end }}

{{/* The component's Service; (… "headless" true) for the headless twin that lists every pod. */}}
{{- define "thinkmesh.service" -}}
{{- $root := .root }}
{{- $c := index $root.Values .name }}
{{- if get . "pool" }}{{- $c = .values }}{{- end }}
{{- $headless := and (hasKey . "headless") .headless }}
{{- $metrics := and $root.Values.metrics.enabled (not $headless) }}
{{- if and $c.enabled (or (and .grpc (gt (int $c.service.port) 0)) $metrics) }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "thinkmesh.componentName" . }}{{ if $headless }}-headless{{ end }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "thinkmesh.labels" . | nindent 4 }}
  {{- with $c.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- if $headless }}
  type: ClusterIP
  clusterIP: None
  {{- else }}
  type: {{ $c.service.type }}
  {{- end }}
  selector:
    {{- include "thinkmesh.selectorLabels" . | nindent 4 }}
  ports:
    {{- if .grpc }}
    - name: grpc
      port: {{ $c.service.port }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
    {{- end }}
    {{- if $metrics }}
    - name: metrics
      port: {{ $root.Values.metrics.port }}
      targetPort: metrics
      protocol: TCP
      appProtocol: http
    {{- end }}
{{- end }}
{{- end }}

{{- define "thinkmesh.hpa" -}}
{{- $c := index .root.Values .name }}
{{- if get . "pool" }}{{- $c = .values }}{{- end }}
{{- /* KEDA scales the pools it is on for (thinkmesh.scaledObject): an HPA beside it would fight it. */}}
{{- if and $c.enabled $c.autoscaling.enabled (not (include "thinkmesh.keda" $c)) }}
{{- $a := $c.autoscaling }}
{{- if not (or $a.targetCPUUtilizationPercentage $a.targetMemoryUtilizationPercentage) }}
{{- fail (printf "%s.autoscaling needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" .name) }}
{{- end }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "thinkmesh.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "thinkmesh.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "thinkmesh.componentName" . }}
  minReplicas: {{ $a.minReplicas }}
  maxReplicas: {{ $a.maxReplicas }}
  metrics:
    {{- range $resource, $target := dict "cpu" $a.targetCPUUtilizationPercentage "memory" $a.targetMemoryUtilizationPercentage }}
    {{- if $target }}
    - type: Resource
      resource:
        name: {{ $resource }}
        target:
          type: Utilization
          averageUtilization: {{ $target }}
    {{- end }}
    {{- end }}
  {{- with $a.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}

{{- define "thinkmesh.pdb" -}}
{{- $c := index .root.Values .name }}
{{- if get . "pool" }}{{- $c = .values }}{{- end }}
{{- if and $c.enabled $c.pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "thinkmesh.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "thinkmesh.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ $c.pdb.maxUnavailable }}
  {{- /* A crash-looping pod must not hold a node drain hostage. */}}
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      {{- include "thinkmesh.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}

{{- define "thinkmesh.storeClaimName" -}}
{{- default (printf "%s-store" (include "thinkmesh.fullname" .)) .Values.store.existingClaim }}
{{- end }}
