{{/*
The training Jobs (training.mode job): the trainer starts one Kubernetes Job per SFT or PPM stage from a template
the chart renders (training-job-template.yaml), so that the image, the store, the GPUs, the node pool and the
hardening are the chart's to say, and the stage's shape is the trainer's.
*/}}

{{/* Where the trainer finds that template: the ConfigMap's name, the directory it is mounted at, the file. */}}
{{- define "thinkmesh.trainingJobConfigMap" -}}
{{- printf "%s-training-job" (include "thinkmesh.componentName" (dict "root" . "name" "trainer")) }}
{{- end }}

{{- define "thinkmesh.trainingJobDir" -}}
/etc/thinkmesh/training
{{- end }}

{{- define "thinkmesh.trainingJobFile" -}}
{{- printf "%s/job.yaml" (include "thinkmesh.trainingJobDir" .) }}
{{- end }}

{{/* The pods' resources: training.job.resources plus gpusPerNode GPUs, requested and limited (a GPU cannot be
overcommitted, so Kubernetes wants both, equal). Params: root. */}}
{{- define "thinkmesh.trainingJobResources" -}}
{{- $job := .Values.training.job }}
{{- $resources := deepCopy ($job.resources | default dict) }}
{{- range $kind := list "requests" "limits" }}
{{- $amounts := index $resources $kind | default dict }}
{{- if hasKey $amounts "nvidia.com/gpu" }}
{{- fail (printf "training.job.resources.%s: leave nvidia.com/gpu out, training.job.gpusPerNode sets it" $kind) }}
{{- end }}
{{- $_ := set $amounts "nvidia.com/gpu" (int $job.gpusPerNode) }}
{{- $_ := set $resources $kind $amounts }}
{{- end }}
{{- toYaml $resources }}
{{- end }}

{{/* The Job of one training stage (a batch/v1 manifest). The trainer fills in what is the stage's: see the
comment at its top. Params: root. */}}
{{- define "thinkmesh.trainingJob" -}}
{{- $root := . }}
{{- $ctx := dict "root" $root "name" "training" }}
{{- $trainer := dict "root" $root "name" "trainer" }}
{{- $t := $root.Values.trainer }}
{{- $job := $root.Values.training.job -}}
# The Job of one training stage, completed by the trainer before it creates it: metadata.name (this one's, with the
# stage's name appended); spec.completions and parallelism (training.job.nodes), completionMode (Indexed),
# backoffLimit 0 (a failed pod fails the Job; the trainer restarts the whole stage, up to training.job.backoffLimit
# times, from its checkpoints) and activeDeadlineSeconds (what is left of training.job.timeoutSeconds); the pod
# template's subdomain (the stage's headless Service) and the container's command, args and rank environment. For
# training.job.kind pytorchjob it moves this pod template into a PyTorchJob instead. Everything else is the
# chart's: change it in values, not here.
apiVersion: batch/v1
kind: Job
metadata:
  # The prefix of every stage's Job name (<prefix>-r3-sft): the release's, so two releases in one namespace never
  # take each other's Jobs.
  name: {{ include "thinkmesh.componentName" $ctx }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "thinkmesh.labels" $ctx | nindent 4 }}
spec:
  template:
    metadata:
      labels:
        {{- include "thinkmesh.labels" $ctx | nindent 8 }}
      {{- with $job.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      # A failed pod fails the Job (a replacement could not rejoin a running torchrun group); the trainer starts
      # the stage again as a new Job, which resumes from the last checkpoint.
      restartPolicy: Never
      # The serving pods' account, without a token: training calls no Kubernetes API.
      serviceAccountName: {{ include "thinkmesh.serviceAccountName" $root }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $job.runtimeClassName }}
      runtimeClassName: {{ . }}
      {{- end }}
      {{- with $job.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      # The trainer's uid and group: the stages write the store's files that the trainer then publishes.
      securityContext:
        {{- toYaml $t.podSecurityContext | nindent 8 }}
      {{- with $job.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $job.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $job.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: train
          image: {{ include "thinkmesh.image" $trainer | quote }}
          imagePullPolicy: {{ $t.image.pullPolicy }}
          ports:
            - name: rendezvous
              containerPort: {{ $job.rendezvousPort }}
              protocol: TCP
          env:
            # The root filesystem is read-only: caches (Hugging Face, Triton, torch) go to the /tmp emptyDir.
            - name: HOME
              value: /tmp
            - name: THINKMESH_STORE
              value: {{ $root.Values.store.mountPath | quote }}
            {{- range $name, $value := include "thinkmesh.loggingSettings" $trainer | fromYaml }}
            - name: {{ $name }}
              value: {{ $value | quote }}
            {{- end }}
          resources:
            {{- include "thinkmesh.trainingJobResources" $root | nindent 12 }}
          securityContext:
            {{- toYaml $t.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if $job.shmSizeLimit }}
            - name: shm
              mountPath: /dev/shm
            {{- end }}
            - name: store
              mountPath: {{ $root.Values.store.mountPath }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ $job.tmpSizeLimit }}
        {{- if $job.shmSizeLimit }}
        - name: shm
          emptyDir:
            medium: Memory
            sizeLimit: {{ $job.shmSizeLimit }}
        {{- end }}
        - name: store
          persistentVolumeClaim:
            claimName: {{ include "thinkmesh.storeClaimName" $root }}
{{- end }}

{{/* The rule that lets a stage's pods talk among themselves, on any port: torchrun's rendezvous
(training.job.rendezvousPort), then the TCP ports NCCL and gloo pick for themselves. Params: root, direction
("from": an ingress rule, "to": an egress rule). */}}
{{- define "thinkmesh.trainingPeers" -}}
# The other pods of the stage, any port: torchrun's rendezvous, then NCCL's and gloo's own ports
- {{ .direction }}:
    {{- include "thinkmesh.peer" (dict "root" .root "name" "training") | nindent 4 }}
{{- end }}

{{/* The rules of the trainer's Role for its training Jobs. It creates, follows and deletes a stage's Job and the
headless Service its pods rendezvous under (or, for kind pytorchjob, a PyTorchJob, whose operator makes the pods'
Services); it reads the pods' state and logs to say why a stage failed. `create` cannot be limited to names, and
the Jobs' names are the trainer's, so these are not limited to names either. Params: root. */}}
{{- define "thinkmesh.trainerTrainingRules" -}}
- apiGroups: [batch]
  resources: [jobs]
  verbs: [create, get, list, watch, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
- apiGroups: [""]
  resources: [services]
  verbs: [create, get, delete]
{{- if eq .Values.training.job.kind "pytorchjob" }}
- apiGroups: [kubeflow.org]
  resources: [pytorchjobs]
  verbs: [create, get, list, watch, delete]
{{- end }}
{{- end }}
