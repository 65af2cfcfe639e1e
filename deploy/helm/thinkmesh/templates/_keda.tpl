{{/*
KEDA (keda.sh/v1alpha1; KEDA itself installed in the cluster): with worker.autoscaling.keda.enabled each worker pool
gets a ScaledObject that scales its Deployment on the length of its queues' Redis lists (the redis scaler: Celery
keeps each queue as a list named after it), instead of a CPU HPA. KEDA's operator reads Redis itself, with the
broker's password and, with TLS, the pool's certificate, from a TriggerAuthentication.
Offline schemas of both kinds: schemas/ (scripts/helm_check.sh, tests/e2e/test_chart.py).
*/}}

{{/* "true" when KEDA scales a component with these values (only worker pools have autoscaling.keda), else "". */}}
{{- define "thinkmesh.keda" -}}
{{- if dig "autoscaling" "keda" "enabled" false . }}
{{- true }}
{{- end }}
{{- end }}

{{/* Where KEDA reaches the broker, as JSON: address (host:port), databaseIndex, tls, and the password's Secret
(passwordSecret: name and key; empty name = no password). The in-chart Redis: its Service, database 0, TLS with
tls.enabled, its password Secret. An external one: keda.redis values, else what redis.external.url says (its
password then sits in the chart's broker Secret under "password"). Params: component context. */}}
{{- define "thinkmesh.kedaRedis" -}}
{{- $root := .root }}
{{- $k := .values.autoscaling.keda.redis }}
{{- if $root.Values.redis.enabled }}
{{- $address := printf "%s:%d" (include "thinkmesh.serviceHost" (dict "root" $root "name" "redis")) (int $root.Values.redis.service.port) }}
{{- $ref := include "thinkmesh.redisPasswordRef" $root | fromYaml }}
{{- dict "address" $address "databaseIndex" 0 "tls" $root.Values.tls.enabled "clientCertificate" $root.Values.tls.enabled "passwordSecret" $ref | toJson }}
{{- else }}
{{- $ext := $root.Values.redis.external }}
{{- $url := dict }}
{{- if and $ext.url (not $ext.existingSecret) }}
{{- $url = urlParse $ext.url }}
{{- end }}
{{- $address := $k.address | default (get $url "host") }}
{{- if not $address }}
{{- fail "worker.autoscaling.keda.redis.address is required with redis.external.existingSecret (KEDA cannot read the URL in it)" }}
{{- end }}
{{- $db := get $url "path" | trimPrefix "/" | default "0" }}
{{- if ne (toString $k.databaseIndex) "" }}
{{- $db = $k.databaseIndex }}
{{- end }}
{{- $tls := eq (get $url "scheme") "rediss" }}
{{- if ne (toString $k.tls) "" }}
{{- $tls = $k.tls }}
{{- end }}
{{- $ref := dict "name" "" "key" "" }}
{{- if $k.passwordSecret.name }}
{{- $ref = $k.passwordSecret }}
{{- else if include "thinkmesh.externalRedisPassword" $root }}
{{- $ref = dict "name" (include "thinkmesh.brokerSecretName" $root) "key" "password" }}
{{- end }}
{{- dict "address" $address "databaseIndex" (int $db) "tls" $tls "clientCertificate" false "passwordSecret" $ref | toJson }}
{{- end }}
{{- end }}

{{/* The password in redis.external.url, when the chart keeps that URL in its own Secret; else "". Params: root. */}}
{{- define "thinkmesh.externalRedisPassword" -}}
{{- $ext := .Values.redis.external }}
{{- if and (not .Values.redis.enabled) $ext.url (not $ext.existingSecret) }}
{{- $userinfo := get (urlParse $ext.url) "userinfo" }}
{{- if contains ":" $userinfo }}
{{- (splitn ":" 2 $userinfo)._1 }}
{{- end }}
{{- end }}
{{- end }}

{{/* "true" when KEDA scales some worker pool, else "". Params: root. */}}
{{- define "thinkmesh.kedaAny" -}}
{{- range $pool := include "thinkmesh.workerPools" $ | fromJsonArray }}
{{- $out := dict }}
{{- include "thinkmesh.workerPool" (dict "root" $ "pool" $pool "out" $out) }}
{{- if include "thinkmesh.keda" $out.values }}true{{ end }}
{{- end }}
{{- end }}

{{/* "true" when the pool's TriggerAuthentication has something to carry (a password or certificates), else "". */}}
{{- define "thinkmesh.kedaAuthNeeded" -}}
{{- $redis := include "thinkmesh.kedaRedis" . | fromJson }}
{{- if or $redis.passwordSecret.name $redis.clientCertificate }}
{{- true }}
{{- end }}
{{- end }}

{{- define "thinkmesh.scaledObject" -}}
{{- $c := .values }}
{{- if and $c.enabled (include "thinkmesh.keda" $c) }}
{{- $a := $c.autoscaling }}
{{- $k := $a.keda }}
{{- $redis := include "thinkmesh.kedaRedis" . | fromJson }}
{{- if and (eq (int $a.minReplicas) 0) (has "solve" $c.queues) }}
{{- fail (printf "worker.pools.%s consumes the solve queue: its autoscaling.minReplicas must be 1 or more (the SearchService is ready only while a worker beats, and Solve calls would wait for a pod to start)" .pool) }}
{{- end }}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
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
  minReplicaCount: {{ $a.minReplicas }}
  maxReplicaCount: {{ $a.maxReplicas }}
  pollingInterval: {{ $k.pollingInterval }}
  cooldownPeriod: {{ $k.cooldownPeriod }}
  {{- with $a.behavior }}
  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        {{- toYaml . | nindent 8 }}
  {{- end }}
  triggers:
    {{- range $queue := $c.queues }}
    # Queued {{ $queue }} tasks (Celery's Redis list "{{ $queue }}"): ceil(length / listLength) pods.
    - type: redis
      name: {{ $queue }}
      metadata:
        address: {{ $redis.address | quote }}
        listName: {{ $queue | quote }}
        listLength: {{ $k.listLength | toString | quote }}
        databaseIndex: {{ $redis.databaseIndex | int | toString | quote }}
        {{- if $redis.tls }}
        enableTLS: "true"
        {{- end }}
      {{- if include "thinkmesh.kedaAuthNeeded" $ }}
      authenticationRef:
        name: {{ include "thinkmesh.componentName" $ }}
      {{- end }}
    {{- end }}
{{- end }}
{{- end }}

{{/* The credentials KEDA's operator reads Redis with: the broker's password; with the in-chart Redis over TLS
(mutual TLS) the pool's certificate and the CA (the worker's TLS Secret). */}}
{{- define "thinkmesh.kedaAuth" -}}
{{- $c := .values }}
{{- if and $c.enabled (include "thinkmesh.keda" $c) (include "thinkmesh.kedaAuthNeeded" .) }}
{{- $redis := include "thinkmesh.kedaRedis" . | fromJson }}
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata:
  name: {{ include "thinkmesh.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "thinkmesh.labels" . | nindent 4 }}
spec:
  secretTargetRef:
    {{- if $redis.passwordSecret.name }}
    - parameter: password
      name: {{ $redis.passwordSecret.name }}
      key: {{ $redis.passwordSecret.key }}
    {{- end }}
    {{- if $redis.clientCertificate }}
    {{- $secret := include "thinkmesh.tlsSecretName" . }}
    {{- range $parameter, $key := dict "ca" "ca.crt" "cert" "tls.crt" "key" "tls.key" }}
    - parameter: {{ $parameter }}
      name: {{ $secret }}
      key: {{ $key }}
    {{- end }}
    {{- end }}
{{- end }}
{{- end }}
