{{/*
The settings of a component as THINKMESH_* variables: the chart's wiring first, then the component's `config`
(which wins; only the trainer's training fields, which the chart takes from `training`, are refused there).
Rendered into the component's ConfigMap; its hash goes into the pod annotations.

Params: (dict "root" $ "name" "search" "store" "rw|ro|" "calls" (list "sandbox" ...) "auth" true)
*/}}
{{- define "thinkmesh.settings" -}}
{{- $root := .root }}
{{- $c := index $root.Values .name }}
{{- if get . "pool" }}{{- $c = .values }}{{- end }}
{{- $p := include "thinkmesh.envPrefix" . }}
{{- $env := include "thinkmesh.loggingSettings" . | fromYaml }}
{{- if $root.Values.metrics.enabled }}
{{- $_ := set $env (printf "%sMETRICS_PORT" $p) (toString $root.Values.metrics.port) }}
{{- end }}
{{- /* The server drains within DRAIN_SECONDS; preStop sleep + drain must end before the kubelet's SIGKILL. */}}
{{- $grace := int $c.terminationGracePeriodSeconds }}
{{- $drain := max 0 (sub $grace 15) | int }}
{{- if hasKey $c.config "drain_seconds" }}
{{- $drain = int (index $c.config "drain_seconds") }}
{{- end }}
{{- if ge (add $drain (int $root.Values.preStopSleepSeconds)) $grace }}
{{- fail (printf "%s: preStopSleepSeconds (%d) + drain_seconds (%d) must be below terminationGracePeriodSeconds (%d)" .name (int $root.Values.preStopSleepSeconds) $drain $grace) }}
{{- end }}
{{- $_ := set $env (printf "%sDRAIN_SECONDS" $p) (toString $drain) }}
{{- if $root.Values.tls.enabled }}
{{- $dir := $root.Values.tls.mountPath }}
{{- /* The pod's certificate: its server certificate, and its client certificate towards what it calls. */}}
{{- $_ := set $env (printf "%sTLS_CERT" $p) (printf "%s/tls.crt" $dir) }}
{{- $_ := set $env (printf "%sTLS_KEY" $p) (printf "%s/tls.key" $dir) }}
{{- /* Servers called by other components demand their client certificates (mutual TLS); the API servers
demand them from users only when tls.apiClientCertificates says so. */}}
{{- if or .callers (and .clients $root.Values.tls.apiClientCertificates) }}
{{- $_ := set $env (printf "%sTLS_CA" $p) (printf "%s/ca.crt" $dir) }}
{{- end }}
{{- /* Callers verify the services they call against the CA (and present their own certificate). */}}
{{- if .calls }}
{{- $_ := set $env (printf "%sCLIENT_TLS_CA" $p) (printf "%s/ca.crt" $dir) }}
{{- end }}
{{- else }}
{{- /* Plaintext off loopback is refused unless asked for explicitly: tls.enabled=false is that ask. */}}
{{- $_ := set $env (printf "%sINSECURE" $p) "true" }}
{{- end }}
{{- if not .grpc }}
{{- /* No gRPC server here (the worker): HOST only binds the metrics endpoint, which Prometheus must reach. */}}
{{- $_ := set $env (printf "%sHOST" $p) "0.0.0.0" }}
{{- end }}
{{- if and .auth $root.Values.auth.enabled }}
{{- $_ := set $env (printf "%sAUTH_TOKENS_FILE" $p) (printf "/etc/thinkmesh/auth/%s" $root.Values.auth.tokensKey) }}
{{- end }}
{{- if .store }}
{{- $_ := set $env "THINKMESH_STORE" $root.Values.store.mountPath }}
{{- end }}
{{- range .calls }}
{{- if (index $root.Values .).enabled }}
{{- $_ := set $env (printf "%s%s_TARGET" $p (upper .)) (include "thinkmesh.grpcTarget" (dict "root" $root "name" .)) }}
{{- end }}
{{- end }}
{{- if eq .name "sandbox" }}
{{- /* One program per CPU: the pod's cpuset is usually the whole node, so the sandbox would count every core
of the node as its own. The CPU limit is the right count. */}}
{{- $cpu := dig "limits" "cpu" "" $c.resources | toString }}
{{- if $cpu }}
{{- $cores := 0.0 }}
{{- if hasSuffix "m" $cpu }}
{{- $cores = divf (trimSuffix "m" $cpu | float64) 1000 }}
{{- else }}
{{- $cores = float64 $cpu }}
{{- end }}
{{- $_ := set $env "THINKMESH_SANDBOX_MAX_WORKERS" (max 1 (ceil $cores | int) | toString) }}
{{- end }}
{{- end }}
{{- if .broker }}
{{- /* The broker URLs themselves come from Secrets (the Deployment's env); with TLS on, the in-chart Redis
speaks TLS only and demands the pod's certificate. */}}
{{- if and $root.Values.tls.enabled $root.Values.redis.enabled }}
{{- $dir := $root.Values.tls.mountPath }}
{{- $_ := set $env (printf "%sBROKER_TLS_CA" $p) (printf "%s/ca.crt" $dir) }}
{{- $_ := set $env (printf "%sBROKER_TLS_CERT" $p) (printf "%s/tls.crt" $dir) }}
{{- $_ := set $env (printf "%sBROKER_TLS_KEY" $p) (printf "%s/tls.key" $dir) }}
{{- end }}
{{- end }}
{{- if eq .name "worker" }}
{{- $_ := set $env (printf "%sHEALTH_PORT" $p) (toString $c.healthPort) }}
{{- if get . "pool" }}
{{- /* The Celery queues this pool consumes (worker.pools). */}}
{{- $_ := set $env (printf "%sQUEUES" $p) (join "," $c.queues) }}
{{- end }}
{{- end }}
{{- $rollout := include "thinkmesh.rollout" $root }}
{{- if and .models $rollout }}
{{- /* The trainer rolls this Deployment when it publishes: pods load the current version at start only. */}}
{{- $_ := set $env (printf "%sRELOAD" $p) "off" }}
{{- end }}
{{- if eq .name "trainer" }}
{{- if $rollout }}
{{- $_ := set $env (printf "%sKUBE_NAMESPACE" $p) $root.Release.Namespace }}
{{- $_ := set $env (printf "%sKUBE_POLICY_DEPLOYMENT" $p) (include "thinkmesh.componentName" (dict "root" $root "name" "policy")) }}
{{- $_ := set $env (printf "%sKUBE_PPM_DEPLOYMENT" $p) (include "thinkmesh.componentName" (dict "root" $root "name" "ppm")) }}
{{- end }}
{{- /* Before a search the trainer waits until the services serve the store's current versions: only those
that follow the store (a pinned model never will). */}}
{{- $following := list }}
{{- range $kind := list "policy" "ppm" }}
{{- $m := index $root.Values $kind }}
{{- if and $m.enabled (not $m.config.model) }}
{{- $following = append $following $kind }}
{{- end }}
{{- end }}
{{- $_ := set $env (printf "%sWAIT_FOR" $p) (join "," $following) }}
{{- /* A round keeps at most this many tasks on the round queue (services/trainer/dispatch.py): what the round
pools run at their largest (pods × worker_concurrency), so the queue never holds more than they can take and a
queue-length autoscaler (KEDA) still sees enough to scale them up to their maximum. trainer.config wins. */}}
{{- if not (hasKey $root.Values.trainer.config "search_in_flight") }}
{{- $inFlight := 0 }}
{{- range $pool := include "thinkmesh.workerPools" $root | fromJsonArray }}
{{- $out := dict }}
{{- include "thinkmesh.workerPool" (dict "root" $root "pool" $pool "out" $out) }}
{{- $v := $out.values }}
{{- if has "round" $v.queues }}
{{- $pods := $v.replicas }}
{{- if or $v.autoscaling.enabled $v.autoscaling.keda.enabled }}
{{- $pods = $v.autoscaling.maxReplicas }}
{{- end }}
{{- $inFlight = add $inFlight (mul $pods ($v.config.worker_concurrency | default 16)) }}
{{- end }}
{{- end }}
{{- if gt (int $inFlight) 0 }}
{{- $_ := set $env (printf "%sSEARCH_IN_FLIGHT" $p) (toString $inFlight) }}
{{- end }}
{{- end }}
{{- /* Where its stages train (training; services/trainer/training/settings.py). The chart renders the Jobs'
template, Role and NetworkPolicy from the same values, so these come from `training` only: the same field in
trainer.config is refused rather than left to disagree with them. */}}
{{- $t := $root.Values.training }}
{{- $fields := list }}
{{- $fields = append $fields (list "training_mode" "training.mode" $t.mode) }}
{{- $fields = append $fields (list "training_nproc_per_node" "training.nprocPerNode" (int $t.nprocPerNode)) }}
{{- $fields = append $fields (list "training_fsdp" "training.strategy.fsdp" $t.strategy.fsdp) }}
{{- $fields = append $fields (list "training_gradient_checkpointing" "training.strategy.gradientCheckpointing" $t.strategy.gradientCheckpointing) }}
{{- $fields = append $fields (list "training_attention" "training.strategy.attention" $t.strategy.attention) }}
{{- $fields = append $fields (list "training_micro_batch_size" "training.strategy.microBatchSize" (int $t.strategy.microBatchSize)) }}
{{- $fields = append $fields (list "training_checkpoint_steps" "training.strategy.checkpointSteps" (int $t.strategy.checkpointSteps)) }}
{{- if include "thinkmesh.trainingJobs" $root }}
{{- $j := $t.job }}
{{- $fields = append $fields (list "job_kind" "training.job.kind" $j.kind) }}
{{- $fields = append $fields (list "job_namespace" "the release namespace" $root.Release.Namespace) }}
{{- $fields = append $fields (list "job_nodes" "training.job.nodes" (int $j.nodes)) }}
{{- $fields = append $fields (list "job_gpus_per_node" "training.job.gpusPerNode" (int $j.gpusPerNode)) }}
{{- $fields = append $fields (list "job_backoff_limit" "training.job.backoffLimit" (int $j.backoffLimit)) }}
{{- $fields = append $fields (list "job_timeout_s" "training.job.timeoutSeconds" (int64 $j.timeoutSeconds)) }}
{{- $fields = append $fields (list "job_rendezvous_port" "training.job.rendezvousPort" (int $j.rendezvousPort)) }}
{{- $fields = append $fields (list "job_template" "the training Job template it mounts" (include "thinkmesh.trainingJobFile" $root)) }}
{{- end }}
{{- range $fields }}
{{- $field := index . 0 }}
{{- if hasKey $c.config $field }}
{{- fail (printf "trainer.config.%s: the chart sets it from %s" $field (index . 1)) }}
{{- end }}
{{- $_ := set $env (printf "%s%s" $p (upper $field)) (toString (index . 2)) }}
{{- end }}
{{- end }}
{{- range $key, $value := $c.config }}
{{- if and (ne $key "drain_seconds") (ne (toString $value) "") }}
{{- $_ := set $env (printf "%s%s" $p (upper $key)) (toString $value) }}
{{- end }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/* The logging settings of a thinkmesh process, as a map of variables: every service's, and the training Jobs'
(under the trainer's prefix). Params: component context. */}}
{{- define "thinkmesh.loggingSettings" -}}
{{- $p := include "thinkmesh.envPrefix" . }}
{{ $p }}LOG_FORMAT: {{ .root.Values.logging.format | quote }}
{{ $p }}LOG_LEVEL: {{ .root.Values.logging.level | quote }}
{{- end }}

{{/* The component's ConfigMap. Same params as thinkmesh.settings. */}}
{{- define "thinkmesh.configMap" -}}
{{- $c := index .root.Values .name }}
{{- if get . "pool" }}{{- $c = .values }}{{- end }}
{{- if $c.enabled }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "thinkmesh.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "thinkmesh.labels" . | nindent 4 }}
data:
  {{- include "thinkmesh.settings" . | trim | nindent 2 }}
{{- end }}
{{- end }}
