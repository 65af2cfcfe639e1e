{{/*
Who is who: how each component runs, what it mounts, whom it calls and who may call it. The Deployments,
ConfigMaps and NetworkPolicies are all derived from this one table.

  args     the container's arguments to `thinkmesh` (the chart adds --host/--port for gRPC servers)
  grpc     serves gRPC on service.port (and so gets gRPC probes and a Service port)
  store    mounts the model store: rw, ro, or "" (not at all)
  auth     checks SearchService bearer tokens
  broker   talks to Redis (Celery broker and result backend)
  calls    gRPC services it calls: THINKMESH_<SVC>_<CALLEE>_TARGET and an egress rule each
  callers  components admitted on its gRPC port
  clients  also admits networkPolicy.clients (users of the API)
  strategy the Deployment's update strategy
*/}}
{{- define "thinkmesh.wiringTable" -}}
sandbox:
  args: [serve, sandbox]
  grpc: true
  store: ""
  auth: false
  broker: false
  calls: []
  callers: [search, worker, trainer]
  clients: false
  strategy: RollingUpdate
policy:
  args: [serve, policy]
  grpc: true
  store: ro
  auth: false
  broker: false
  calls: []
  callers: [search, worker, trainer]
  clients: false
  strategy: RollingUpdate
ppm:
  args: [serve, ppm]
  grpc: true
  store: ro
  auth: false
  broker: false
  calls: []
  callers: [search, worker, trainer]
  clients: false
  strategy: RollingUpdate
search:
  args: [serve, search]
  grpc: true
  store: ""
  auth: true
  broker: true
  calls: [sandbox, policy, ppm]
  callers: []
  clients: true
  strategy: RollingUpdate
worker:
  args: [worker]
  grpc: false
  store: rw
  auth: false
  broker: true
  calls: [sandbox, policy, ppm]
  callers: []
  clients: false
  strategy: RollingUpdate
trainer:
  args: [serve, trainer]
  grpc: true
  store: rw
  auth: false
  broker: true
  calls: [sandbox, policy, ppm]
  callers: []
  clients: true
  strategy: Recreate
{{- end }}

{{/* (dict "root" $ "name" "search") plus that component's row of the table. */}}
{{- define "thinkmesh.wiring" -}}
{{- index (include "thinkmesh.wiringTable" . | fromYaml) .name | toYaml }}
{{- end }}
