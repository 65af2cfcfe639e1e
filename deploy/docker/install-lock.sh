#!/bin/sh
# Inside deploy/docker/build.Dockerfile's image: creates an image's virtual environment, /opt/thinkmesh, from one
# lock file and the thinkmesh wheel, offline and hash-checked.
#
#   install-lock EXTRA [TORCH_DIR]
#
# EXTRA names requirements/EXTRA.txt. TORCH_DIR (the torch images: /opt/torch) is where the base layer keeps
# torch; a .pth file puts it on the environment's path, so torch stays in the one layer the images share.
set -eu
extra=$1
torch_dir=${2:-}
python3 -m venv /opt/thinkmesh
if [ -n "$torch_dir" ]; then
  /opt/thinkmesh/bin/python -c 'import sys, sysconfig; print(sys.argv[1], file=open(sysconfig.get_paths()["purelib"] + "/torch.pth", "w"))' "$torch_dir"
fi
/opt/thinkmesh/bin/pip install --no-cache-dir --no-index --find-links /wheels/py --require-hashes --no-deps \
  -r "/requirements/$extra.txt"
/opt/thinkmesh/bin/pip install --no-cache-dir --no-index --no-deps /dist/thinkmesh-*.whl
