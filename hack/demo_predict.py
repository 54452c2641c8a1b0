#!/usr/bin/env python3
"""The demo's last step: send the validation images to every Ready serving pod through TF Serving's REST
`:predict` and print the accuracy each one gave, beside the accuracy the optimizer measured.

    .venv/bin/python hack/demo_predict.py --namespace ml --name digits --dataset .cluster/demo/digits.npz

Only pods on loopback IPs are asked (the runner nodes' pods, hack/podrunner.py); a pod on a kwok node runs
nothing. Exit 1 when no pod answered or one answered below the accuracy gate (baseline minus maxAccuracyDrop).
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np

REST_PORT = 8501
CHUNK = 100          # instances per request without server-side batching


def kubectl_json(kubectl: str, namespace: str, *args: str) -> dict:
    out = subprocess.run([kubectl, "-n", namespace, "get", *args, "-o", "json"], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)


def predict(url: str, images: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
    """Class probabilities for `images`, `chunk` rows per request (row format: {"instances": [...]})."""
    rows = []
    for start in range(0, len(images), chunk):
        body = json.dumps({"instances": images[start:start + chunk].tolist()}).encode()
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            rows.extend(json.load(r)["predictions"])
    return np.asarray(rows)


def rows_per_request(md: dict) -> int:
    """Rows per request the pods accept. With server-side batching TF Serving refuses a request of more rows than
    max_batch_size (HTTP 400); the size in force is status.serving.batching's when batching auto chose it (0: batching
    is off), else the spec's."""
    chosen = ((md.get("status") or {}).get("serving") or {}).get("batching") or {}
    asked = ((md.get("spec") or {}).get("serving") or {}).get("batching") or {}
    return (chosen["maxBatchSize"] if "maxBatchSize" in chosen else asked.get("maxBatchSize")) or CHUNK


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--name", required=True, help="the ModelDeployment")
    parser.add_argument("--dataset", required=True, help=".npz with x_val and y_val")
    parser.add_argument("--kubectl", default="kubectl")
    args = parser.parse_args(argv)

    md = kubectl_json(args.kubectl, args.namespace, "modeldeployment", args.name)
    model = md["spec"]["model"].get("name") or args.name
    opt = (md.get("status") or {}).get("optimization") or {}
    gate = ((md["spec"].get("optimization") or {}).get("gates") or {}).get("maxAccuracyDrop")
    chunk = rows_per_request(md)
    data = np.load(args.dataset)
    x_val, y_val = data["x_val"].astype("float32"), data["y_val"]
    pods = kubectl_json(args.kubectl, args.namespace, "pods", "-l",
                        f"app.kubernetes.io/instance={args.name},app.kubernetes.io/component=serving")["items"]
    answered, failed = 0, 0
    url = ""
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP", "")
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
        if not ready or not ip or not ipaddress.ip_address(ip).is_loopback:
            continue
        url = f"http://{ip}:{REST_PORT}/v1/models/{model}:predict"
        try:
            probabilities = predict(url, x_val, chunk)
        except (urllib.error.URLError, OSError, KeyError, ValueError) as e:
            print(f"  {pod['metadata']['name']} ({ip}): no prediction: {e}")
            failed += 1
            continue
        accuracy = float(np.mean(np.argmax(probabilities, axis=-1) == y_val))
        answered += 1
        verdict = ""
        if gate is not None and opt.get("baselineAccuracy") is not None:
            floor = opt["baselineAccuracy"] - gate
            verdict = "  within the gate" if accuracy >= floor else f"  BELOW the gate ({floor:.4f})"
            failed += accuracy < floor
        print(f"  {pod['metadata']['name']} ({ip}): {len(y_val)} validation images, accuracy {accuracy:.4f}"
              f"{verdict}")
    if opt:
        print(f"  the optimizer measured: original {opt.get('baselineAccuracy', float('nan')):.4f}, "
              f"optimized {opt.get('optimizedAccuracy', float('nan')):.4f}")
    if not answered:
        print("  no Ready serving pod on a loopback IP answered")
        return 1
    image = json.dumps({"instances": x_val[:1].tolist()}, separators=(",", ":"))
    print("\nAsk it yourself (one validation image, true label "
          f"{int(y_val[0])}):\n  curl -s -X POST {url} -d '{image}'")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
