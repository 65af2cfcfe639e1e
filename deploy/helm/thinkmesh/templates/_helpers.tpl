{{/*
Names, labels and the small facts every template shares.

Component helpers take a dict: (dict "root" $ "name" "sandbox"), where "name" is one of the values blocks
(policy, ppm, sandbox, search, worker, trainer, redis).
*/}}

{{- define "thinkmesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-thinkmesh", or the release name alone when it already contains the chart name. */}}
{{- define "thinkmesh.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "thinkmesh.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* A component's own name: "worker-<pool>" for a worker pool's objects (the context has "pool"), else its name. */}}
{{- define "thinkmesh.instanceName" -}}
{{- $pool := get . "pool" }}
{{- if $pool }}{{ printf "%s-%s" .name $pool }}{{ else }}{{ .name }}{{ end }}
{{- end }}

{{/* Object name of a component: "<fullname>-<component>", "<fullname>-worker-<pool>" for a worker pool (kept short
enough for "-headless" to fit). */}}
{{- define "thinkmesh.componentName" -}}
{{- printf "%s-%s" (include "thinkmesh.fullname" .root) (include "thinkmesh.instanceName" .) | trunc 54 | trimSuffix "-" }}
{{- end }}

{{- define "thinkmesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "thinkmesh.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .name }}
app.kubernetes.io/component: {{ include "thinkmesh.instanceName" . }}
{{- end }}
{{- end }}

{{/* The worker pools (worker.pools) that run, as a JSON list of their names; [] when the worker is off. */}}
{{- define "thinkmesh.workerPools" -}}
{{- $out := list }}
{{- if .Values.worker.enabled }}
{{- range $pool, $v := .Values.worker.pools }}
{{- if and (kindIs "map" $v) (or (not (hasKey $v "enabled")) $v.enabled) }}
{{- $out = append $out $pool }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/* A worker pool's values: worker.pools.<pool> merged key by key over the rest of `worker` (maps merge, anything
else replaces, false and 0 included), plus "queues", the list it consumes (the pool's name by default). Written
into .out.values. Params: (dict "root" $ "pool" NAME "out" (dict)). */}}
{{- define "thinkmesh.workerPool" -}}
{{- $base := omit (deepCopy .root.Values.worker) "pools" }}
{{- $pool := deepCopy (index .root.Values.worker.pools .pool) }}
{{- include "thinkmesh.mergeInto" (dict "dst" $base "src" (omit $pool "queues")) }}
{{- $queues := get $pool "queues" | default (list .pool) }}
{{- range $queues }}
{{- if not (has . (list "solve" "round")) }}
{{- fail (printf "worker.pools.%s: consumes queue %q; the queues are solve and round (name the pool after one, or set its queues)" $.pool .) }}
{{- end }}
{{- end }}
{{- if hasKey $base.config "queues" }}
{{- fail (printf "worker.pools.%s: config.queues is set by the chart from the pool (worker.pools.<pool>.queues)" .pool) }}
{{- end }}
{{- $_ := set $base "queues" $queues }}
{{- $_ := set .out "values" $base }}
{{- end }}

{{/* Merges map .src into map .dst in place: maps recursively, other values (false, 0 and "" too) replace. */}}
{{- define "thinkmesh.mergeInto" -}}
{{- $dst := .dst }}
{{- range $key, $value := .src }}
{{- if and (kindIs "map" $value) (kindIs "map" (get $dst $key)) }}
{{- include "thinkmesh.mergeInto" (dict "dst" (get $dst $key) "src" $value) }}
{{- else }}
{{- $_ := set $dst $key $value }}
{{- end }}
{{- end }}
{{- end }}

{{/* The app.kubernetes.io/* labels; (dict "root" $ "name" "") for chart-wide objects. */}}
{{- define "thinkmesh.labels" -}}
helm.sh/chart: {{ include "thinkmesh.chart" .root }}
{{ include "thinkmesh.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: thinkmesh
{{- end }}

{{- define "thinkmesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "thinkmesh.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "thinkmesh.image" -}}
{{- $image := (index .root.Values .name).image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s%s" $image.repository (default .root.Chart.AppVersion $image.tag) ($image.tagSuffix | default "") }}
{{- end }}
{{- end }}

{{/* The settings prefix: THINKMESH_<SVC>_. Celery workers read the search settings. */}}
{{- define "thinkmesh.envPrefix" -}}
{{- $svc := ternary "search" .name (eq .name "worker") }}
{{- printf "THINKMESH_%s_" (upper $svc) }}
{{- end }}

{{/* DNS name of a component's Service: <name>[-headless].<namespace>.svc.<clusterDomain>. */}}
{{- define "thinkmesh.serviceHost" -}}
{{- $c := index .root.Values .name }}
{{- $suffix := ternary "-headless" "" (and (hasKey . "headless") .headless) }}
{{- printf "%s%s.%s.svc.%s" (include "thinkmesh.componentName" .) $suffix .root.Release.Namespace .root.Values.clusterDomain }}
{{- end }}

{{/* gRPC target of a component: dns:/// over the headless Service when it has one, so clients round-robin
over every pod; over the ClusterIP otherwise. */}}
{{- define "thinkmesh.grpcTarget" -}}
{{- $c := index .root.Values .name }}
{{- printf "dns:///%s:%d" (include "thinkmesh.serviceHost" (dict "root" .root "name" .name "headless" $c.service.headless)) (int $c.service.port) }}
{{- end }}

{{- define "thinkmesh.tlsSecretName" -}}
{{- if .root.Values.tls.certManager.enabled }}
{{- printf "%s-tls" (include "thinkmesh.componentName" .) }}
{{- else }}
{{- required "tls.existingSecret (or tls.certManager.enabled) is required when tls.enabled is true" .root.Values.tls.existingSecret }}
{{- end }}
{{- end }}

{{- define "thinkmesh.authSecretName" -}}
{{- default (printf "%s-auth" (include "thinkmesh.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{/* The Secret with the keys broker-url and result-backend. */}}
{{- define "thinkmesh.brokerSecretName" -}}
{{- if and (not .Values.redis.enabled) .Values.redis.external.existingSecret }}
{{- .Values.redis.external.existingSecret }}
{{- else }}
{{- printf "%s-redis" (include "thinkmesh.fullname" .) }}
{{- end }}
{{- end }}

{{/* What decides the broker (not the password), hashed into the pods that use it so that a change rolls them. */}}
{{- define "thinkmesh.brokerChecksum" -}}
{{- $r := .Values.redis }}
{{- list $r.enabled $r.service.port $r.external.url $r.external.resultBackend $r.external.existingSecret $r.auth.existingSecret .Values.tls.enabled (include "thinkmesh.fullname" .) | toJson | sha256sum }}
{{- end }}

{{/* The broker's environment of a pod that talks to Redis: the in-chart Redis's URLs built around its password
(Kubernetes expands $(REDIS_PASSWORD)), or an external Redis's URLs from their Secret. Params: component context. */}}
{{- define "thinkmesh.brokerEnv" -}}
{{- $root := .root }}
{{- $prefix := include "thinkmesh.envPrefix" . }}
{{- if $root.Values.redis.enabled }}
{{- $scheme := ternary "rediss" "redis" $root.Values.tls.enabled }}
{{- $host := include "thinkmesh.serviceHost" (dict "root" $root "name" "redis") }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      {{- include "thinkmesh.redisPasswordRef" $root | nindent 6 }}
- name: {{ $prefix }}BROKER_URL
  value: {{ printf "%s://:$(REDIS_PASSWORD)@%s:%d/0" $scheme $host (int $root.Values.redis.service.port) | quote }}
- name: {{ $prefix }}RESULT_BACKEND
  value: {{ printf "%s://:$(REDIS_PASSWORD)@%s:%d/1" $scheme $host (int $root.Values.redis.service.port) | quote }}
{{- else }}
- name: {{ $prefix }}BROKER_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "thinkmesh.brokerSecretName" $root }}
      key: broker-url
- name: {{ $prefix }}RESULT_BACKEND
  valueFrom:
    secretKeyRef:
      name: {{ include "thinkmesh.brokerSecretName" $root }}
      key: result-backend
{{- end }}
{{- end }}

{{/* "true" when the trainer rolls the model Deployments after a publish, else "". It rolls both or neither:
with policy or ppm not deployed here, the pods that are reload in place; with both pinned to a model
(config.model) there is nothing to roll to. */}}
{{- define "thinkmesh.rollout" -}}
{{- $v := .Values }}
{{- $following := or (not $v.policy.config.model) (not $v.ppm.config.model) }}
{{- if and $v.trainer.enabled $v.trainer.rollout.enabled $v.policy.enabled $v.ppm.enabled $following }}
{{- true }}
{{- end }}
{{- end }}

{{/* "true" when a round's training stages run as Kubernetes Jobs that the trainer creates (training.mode job),
else "". */}}
{{- define "thinkmesh.trainingJobs" -}}
{{- if and .Values.trainer.enabled (eq .Values.training.mode "job") }}
{{- true }}
{{- end }}
{{- end }}

{{/* "true" when the trainer calls the Kubernetes API, else "": to roll the model Deployments (thinkmesh.rollout),
to run its training Jobs (thinkmesh.trainingJobs). It then has a ServiceAccount of its own with a token, a Role
per purpose (trainer-rbac.yaml) and egress to networkPolicy.apiServer. */}}
{{- define "thinkmesh.trainerAccount" -}}
{{- if or (include "thinkmesh.rollout" .) (include "thinkmesh.trainingJobs" .) }}
{{- true }}
{{- end }}
{{- end }}

{{/* The rules of the trainer's Role for trainer.rollout: read and patch the policy and PPM Deployments, by name
and nothing else. Params: root. */}}
{{- define "thinkmesh.trainerRolloutRules" -}}
- apiGroups: [apps]
  resources: [deployments]
  resourceNames:
    - {{ include "thinkmesh.componentName" (dict "root" . "name" "policy") }}
    - {{ include "thinkmesh.componentName" (dict "root" . "name" "ppm") }}
  verbs: [get, patch]
{{- end }}

{{/* The in-chart Redis's password: a Secret and its key. The chart renders that Secret only from
redis.auth.password; without it (and without existingSecret) the secrets Job creates it in the cluster. */}}
{{- define "thinkmesh.redisPasswordRef" -}}
{{- $a := .Values.redis.auth }}
{{- if $a.existingSecret -}}
name: {{ $a.existingSecret }}
key: {{ $a.existingSecretKey }}
{{- else -}}
name: {{ include "thinkmesh.fullname" . }}-redis
key: password
{{- end }}
{{- end }}

{{/* The Secrets the secrets Job must create, as (list (dict "name" … "key" …)): what no value names. */}}
{{- define "thinkmesh.generatedSecrets" -}}
{{- $v := .Values }}
{{- $out := list }}
{{- if and $v.redis.enabled (not $v.redis.auth.password) (not $v.redis.auth.existingSecret) }}
{{- $out = append $out (dict "name" (printf "%s-redis" (include "thinkmesh.fullname" .)) "key" "password") }}
{{- end }}
{{- if and $v.auth.enabled (or $v.search.enabled $v.trainer.enabled) (not $v.auth.tokens) (not $v.auth.existingSecret) }}
{{- $out = append $out (dict "name" (include "thinkmesh.authSecretName" .) "key" $v.auth.tokensKey) }}
{{- end }}
{{- toJson $out }}
{{- end }}
