#!/usr/bin/env bash
# Roll out one overlay with kubectl's current context: this release's migration Job first, then web,
# worker and beat (their pods wait for the migrations in an init container).
#   deploy/kubernetes/deploy.sh staging|production
# ROLLOUT_TIMEOUT (seconds, default 900) bounds the Job and each Deployment's rollout.
set -euo pipefail

overlay=${1:-}
here=$(cd "$(dirname "$0")" && pwd)
dir="$here/overlays/$overlay"
if [ -z "$overlay" ] || [ ! -f "$dir/kustomization.yaml" ]; then
    echo "usage: $0 OVERLAY, one of: $(ls "$here/overlays" | tr '\n' ' ')" >&2
    exit 2
fi
namespace=$(sed -n 's/^namespace: *//p' "$dir/kustomization.yaml")
timeout=${ROLLOUT_TIMEOUT:-900}

for secret in mlops-app mlops-redis-keda; do
    if ! kubectl -n "$namespace" get secret "$secret" >/dev/null 2>&1; then
        echo "no Secret $secret in namespace $namespace: create it first (deploy/kubernetes/secret.example.yaml)" >&2
        exit 1
    fi
done

# A Job's pod template cannot change: the previous release's Job goes before this one is applied.
kubectl -n "$namespace" delete job mlops-migrate --ignore-not-found --wait=true
kubectl apply -k "$dir"

deadline=$((SECONDS + timeout))
while :; do
    # Conditions that hold: Complete or Failed at the end (newer clusters add SuccessCriteriaMet etc.).
    state=$(kubectl -n "$namespace" get job mlops-migrate \
        -o jsonpath='{.status.conditions[?(@.status=="True")].type}')
    case " $state " in
        *" Complete "*) break ;;
        *" Failed "*)
            echo "the migration Job failed; its last lines:" >&2
            kubectl -n "$namespace" logs job/mlops-migrate --tail=50 >&2 || true
            exit 1
            ;;
    esac
    if ((SECONDS >= deadline)); then
        echo "the migration Job did not finish within ${timeout}s" >&2
        exit 1
    fi
    sleep 5
done

for deployment in mlops-web mlops-worker mlops-beat; do
    kubectl -n "$namespace" rollout status "deployment/$deployment" --timeout="${timeout}s"
done
echo "$overlay: rolled out to namespace $namespace"
