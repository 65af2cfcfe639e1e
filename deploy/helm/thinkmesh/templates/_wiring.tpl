{{/*
Who is who: how each component runs, what it mounts, whom it calls and who may call it. components.yaml
renders every row (ConfigMap, Deployment, HPA, NetworkPolicy, PDB, Services) from this one table.

  args     the container's arguments to `thinkmesh` (the chart adds --host/--port for gRPC servers)
  grpc     serves gRPC on service.port (and so gets gRPC probes and a Service port)
  store    mounts the model store: rw, ro, or "" (not at all)
  auth     checks bearer tokens (the API: SearchService and TrainerService)
  broker   talks to Redis (Celery broker and result backend)
  calls    gRPC services it calls: THINKMESH_<SVC>_<CALLEE>_TARGET and an egress rule each
  callers  components admitted on its gRPC port
  clients  also admits networkPolicy.clients (users of the API)
  strategy the Deployment's default update strategy (values' `strategy` replaces it): GPU pods replace one pod at a
           time without a surge pod, which would wait for a GPU that is not there
  models   the model kinds it serves (policy, ppm): its pods wait for the seed, and the trainer rolls them
  hpa      may have a HorizontalPodAutoscaler (autoscaling.enabled); the trainer runs the rounds alone, so its
           schema rejects autoscaling and it gets none
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
  strategy: {type: RollingUpdate}
  hpa: true
policy:
  args: [serve, policy]
  models: policy
  grpc: true
  store: ro
  auth: false
  broker: false
  calls: []
  callers: [search, worker, trainer]
  clients: false
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 0, maxUnavailable: 1}}
  hpa: true
ppm:
  args: [serve, ppm]
  models: ppm
  grpc: true
  store: ro
  auth: false
  broker: false
  calls: []
  callers: [search, worker, trainer]
  clients: false
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 0, maxUnavailable: 1}}
  hpa: true
search:
  args: [serve, search]
  grpc: true
  store: ""
  auth: true
  broker: true
  calls: [sandbox, policy, ppm]
  callers: []
  clients: true
  strategy: {type: RollingUpdate}
  hpa: true
worker:
  args: [worker]
  grpc: false
  store: rw
  auth: false
  broker: true
  calls: [sandbox, policy, ppm]
  callers: []
  clients: false
  strategy: {type: RollingUpdate}
  hpa: true
trainer:
  args: [serve, trainer]
  grpc: true
  store: rw
  auth: true
  broker: true
  calls: [sandbox, policy, ppm]
  callers: []
  clients: true
  strategy: {type: Recreate}
  hpa: false
{{- end }}
