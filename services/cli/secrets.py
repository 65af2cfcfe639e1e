"""`thinkmesh secrets ensure`: create a Secret of random values once, in-cluster (the chart's secrets Job).

    thinkmesh secrets ensure --name thinkmesh-redis --random password [--random KEY ...]
        [--namespace NS] [--length 40] [--label app.kubernetes.io/part-of=thinkmesh ...]

Exit status: 0 done (created, keys added, or unchanged), 2 bad arguments, 1 the Kubernetes API refused or failed.
The logic lives in services.common.kube_secrets; this module only parses and prints.
"""

from __future__ import annotations

import argparse
import sys


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"label {text!r} is not KEY=VALUE")
    return key, value


def _ensure(args: argparse.Namespace) -> int:
    from services.common.errors import InvalidInput
    from services.common.kube import KubeApiError
    from services.common.kube_secrets import (
        ensure_secret,
        in_cluster_core,
        pod_namespace,
        validate_request,
    )

    namespace = args.namespace or pod_namespace()
    if namespace is None:
        print("thinkmesh: no --namespace given and not running in a pod", file=sys.stderr)
        return 2
    labels = dict(args.label or ())
    try:
        # Bad arguments fail before any credentials are looked for.
        validate_request(namespace, args.name, args.random, args.length, labels)
    except InvalidInput as exc:
        print(f"thinkmesh: {exc}", file=sys.stderr)
        return 2
    try:
        core = in_cluster_core()
    except ModuleNotFoundError as exc:
        print(f"thinkmesh: {exc} (the search and trainer images install the kubernetes client)", file=sys.stderr)
        return 1
    except KubeApiError as exc:
        print(f"thinkmesh: {exc}", file=sys.stderr)
        return 1
    try:
        result = ensure_secret(core, namespace, args.name, args.random, length=args.length, labels=labels)
    except KubeApiError as exc:
        print(f"thinkmesh: {exc}", file=sys.stderr)
        return 1
    finally:
        core.api_client.close()
    print(result.describe())
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from services.common.kube_secrets import DEFAULT_LENGTH

    group = sub.add_parser("secrets", help="create Kubernetes Secrets of random values (the chart's secrets Job)")
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    ensure = actions.add_parser(
        "ensure",
        help="create a Secret with random values for the given keys, or add the keys it lacks; never change a value",
    )
    ensure.add_argument(
        "--namespace",
        default=None,
        help="the Secret's namespace (default: the pod's own, from its service account)",
    )
    ensure.add_argument("--name", required=True, help="the Secret's name")
    ensure.add_argument(
        "--random",
        action="append",
        required=True,
        metavar="KEY",
        help="a key to fill with a random string of letters and digits (repeatable)",
    )
    ensure.add_argument(
        "--length", type=int, default=DEFAULT_LENGTH, help=f"characters per value (default {DEFAULT_LENGTH})"
    )
    ensure.add_argument(
        "--label",
        action="append",
        type=_label,
        metavar="KEY=VALUE",
        help="a label to put on the Secret when it is created (repeatable)",
    )
    ensure.set_defaults(func=_ensure)
