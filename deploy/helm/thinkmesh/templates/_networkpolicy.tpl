{{/*
NetworkPolicies. A default deny selects every pod of the release; each component's policy then admits its
callers (from the wiring table) on its gRPC port, scrapers on the metrics port, and lets it reach exactly the
services it calls, DNS, and the broker. The sandbox's policy has no egress rule at all.
*/}}

{{- define "thinkmesh.peer" -}}
{{- if and (eq .name "worker") (not (get . "pool")) }}
{{- /* The workers: the pods of every pool. */}}
{{- range include "thinkmesh.workerPools" .root | fromJsonArray }}
{{ include "thinkmesh.peer" (dict "root" $.root "name" "worker" "pool" .) }}
{{- end }}
{{- else }}
- podSelector:
    matchLabels:
      {{- include "thinkmesh.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}

{{- define "thinkmesh.networkPolicy" -}}
{{- $root := .root }}
{{- $c := index $root.Values .name }}
{{- if get . "pool" }}{{- $c = .values }}{{- end }}
{{- if and $root.Values.networkPolicy.enabled $c.enabled }}
{{- $np := $root.Values.networkPolicy }}
{{- $callers := list }}
{{- range .callers }}
{{- if (index $root.Values .).enabled }}
{{- $callers = append $callers . }}
{{- end }}
{{- end }}
{{- $openToAll := and .clients (empty $np.clients) }}
{{- $needsDns := or .calls .broker (index $np.extraEgress .name) }}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "thinkmesh.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "thinkmesh.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "thinkmesh.selectorLabels" . | nindent 6 }}
  policyTypes: [Ingress, Egress]
  {{- $ingress := include "thinkmesh.networkPolicyIngress" (merge (dict "callerList" $callers "openToAll" $openToAll) .) | trim }}
  {{- $egress := include "thinkmesh.networkPolicyEgress" (merge (dict "needsDns" $needsDns) .) | trim }}
  {{- if $ingress }}
  ingress:
    {{- $ingress | nindent 4 }}
  {{- else }}
  ingress: []
  {{- end }}
  {{- if $egress }}
  egress:
    {{- $egress | nindent 4 }}
  {{- else }}
  # No egress at all.
  egress: []
  {{- end }}
{{- end }}
{{- end }}

{{- define "thinkmesh.networkPolicyIngress" -}}
{{- $root := .root }}
{{- $np := $root.Values.networkPolicy }}
{{- if and .grpc (or .callerList .clients) }}
# gRPC from {{ if .openToAll }}any source (networkPolicy.clients is empty){{ else }}{{ join ", " .callerList }}{{ if .clients }}{{ if .callerList }}, {{ end }}networkPolicy.clients{{ end }}{{ end }}
- ports:
    - port: grpc
      protocol: TCP
  {{- if not .openToAll }}
  from:
    {{- range .callerList }}
    {{- include "thinkmesh.peer" (dict "root" $root "name" .) | nindent 4 }}
    {{- end }}
    {{- if .clients }}
    {{- toYaml $np.clients | nindent 4 }}
    {{- end }}
  {{- end }}
{{- end }}
{{- if $root.Values.metrics.enabled }}
# Prometheus
- ports:
    - port: metrics
      protocol: TCP
  {{- with $np.metricsScrapers }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}

{{- define "thinkmesh.networkPolicyEgress" -}}
{{- $root := .root }}
{{- $np := $root.Values.networkPolicy }}
{{- if .needsDns }}
# DNS
- to:
    {{- toYaml $np.dns | nindent 4 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}
{{- range .calls }}
{{- $callee := index $root.Values . }}
{{- if $callee.enabled }}
# gRPC to {{ . }}
- to:
    {{- include "thinkmesh.peer" (dict "root" $root "name" .) | nindent 4 }}
  ports:
    - port: {{ $callee.service.port }}
      protocol: TCP
{{- end }}
{{- end }}
{{- if .broker }}
# The Celery broker
{{- if $root.Values.redis.enabled }}
- to:
    {{- include "thinkmesh.peer" (dict "root" $root "name" "redis") | nindent 4 }}
  ports:
    - port: {{ $root.Values.redis.service.port }}
      protocol: TCP
{{- else }}
- ports:
    - port: {{ $root.Values.redis.external.port }}
      protocol: TCP
  {{- with $root.Values.redis.external.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}
{{- if and (eq .name "trainer") (include "thinkmesh.trainerAccount" $root) }}
{{- include "thinkmesh.apiServerEgress" $root }}
{{- end }}
{{- with index $np.extraEgress .name }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Egress to the Kubernetes API server (networkPolicy.apiServer), for the pods that call it. */}}
{{- define "thinkmesh.apiServerEgress" -}}
{{- $api := .Values.networkPolicy.apiServer }}
# The Kubernetes API server
- ports:
    {{- range $api.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- with $api.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* The NetworkPolicy of a Job's pods: `ingress` in (none when empty); DNS and `egress` out. Params: root, name
(the pods' component label), ingress and egress (NetworkPolicyIngressRules / EgressRules, rendered YAML). */}}
{{- define "thinkmesh.jobNetworkPolicy" -}}
{{- $root := .root }}
{{- if $root.Values.networkPolicy.enabled }}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "thinkmesh.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "thinkmesh.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "thinkmesh.selectorLabels" . | nindent 6 }}
  policyTypes: [Ingress, Egress]
  {{- if .ingress }}
  ingress:
    {{- .ingress | nindent 4 }}
  {{- else }}
  ingress: []
  {{- end }}
  {{- if .egress }}
  egress:
    # DNS
    - to:
        {{- toYaml $root.Values.networkPolicy.dns | nindent 8 }}
      ports:
        - port: 53
          protocol: UDP
        - port: 53
          protocol: TCP
    {{- .egress | nindent 4 }}
  {{- else }}
  egress: []
  {{- end }}
{{- end }}
{{- end }}
