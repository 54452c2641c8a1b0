"""HTTP/REST API of TF Serving (http_rest_api_handler.cc, http_rest_api_util.cc, json_tensor.cc).

GET  /v1/models/<name>[/versions/<v>|/labels/<l>][/metadata]
POST /v1/models/<name>[/versions/<v>|/labels/<l>]:predict   ({"instances": ...} or {"inputs": ...})
GET  <prometheus path> when the monitoring config enables it.
Errors are {"error": "<message>"} with ToHTTPStatusCode's mapping.
"""
from __future__ import annotations

import base64
import json
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import numpy as np
from google.protobuf import json_format

import metrics
from status import ServingError, invalid

PREDICT_RE = re.compile(r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                        r":(classify|regress|predict)")
STATUS_RE = re.compile(r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                       r"(?:/(metadata))?")
DISPATCH_RE = re.compile(r"(?i)/v1/.*")


# ------------------------------------------------------------------------------------------ JSON <-> tensors

def _type_name(v) -> str:
    if isinstance(v, bool):
        return "Bool"
    if isinstance(v, (int, float)):
        return "Number"
    if isinstance(v, str):
        return "String"
    if isinstance(v, list):
        return "Array"
    if isinstance(v, dict):
        return "Object"
    return "Null"


def _leaf(v, spec_dtype, tf_name: str):
    kind = spec_dtype.kind
    if spec_dtype == object:                                # DT_STRING
        if isinstance(v, dict) and set(v) == {"b64"} and isinstance(v["b64"], str):
            try:
                return base64.b64decode(v["b64"], validate=True)
            except Exception:               # noqa: BLE001
                raise invalid(f"Unable to base64 decode: {v['b64']}") from None
        if isinstance(v, str):
            return v.encode()
    elif kind == "b":
        if isinstance(v, bool):
            return v
    elif kind in "iu":
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    elif kind in "fc":
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return v
        if isinstance(v, str) and v in ("NaN", "Infinity", "-Infinity"):
            return float(v.replace("Infinity", "inf"))
    raise invalid(f"JSON Value: {json.dumps(v)} Type: {_type_name(v)} is not of expected type: {tf_name}")


def json_to_array(value, spec) -> np.ndarray:
    """One tensor from JSON (nested lists of the signature's dtype), checking type and rectangularity."""
    shape, v = [], value
    while isinstance(v, list):
        shape.append(len(v))
        if not v:
            break
        v = v[0]
    flat = []

    def walk(x, depth):
        if depth < len(shape):
            if not isinstance(x, list) or len(x) != shape[depth]:
                raise invalid("Failed to process element: the tensor's nested lists are not rectangular "
                              f"(expected shape {shape})")
            for y in x:
                walk(y, depth + 1)
        elif isinstance(x, list):
            raise invalid(f"Failed to process element: the tensor's nested lists are not rectangular "
                          f"(expected shape {shape})")
        else:
            flat.append(_leaf(x, spec.dtype, spec.tf_dtype.name))

    walk(value, 0)
    if spec.dtype == object:
        arr = np.empty(len(flat), dtype=object)
        for i, x in enumerate(flat):
            arr[i] = x
    else:
        arr = np.array(flat, dtype=spec.dtype)
    return arr.reshape(shape)


def parse_predict_body(body: bytes, sig) -> tuple[dict[str, np.ndarray], str]:
    """FillPredictRequestFromJson: -> (inputs, "row"|"columnar")."""
    try:
        doc = json.loads(body.decode("utf-8") if body else "")
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise invalid(f"JSON Parse error: {getattr(e, 'msg', str(e))} at offset: {getattr(e, 'pos', 0)}") from None
    if not isinstance(doc, dict):
        raise invalid("JSON Parse error: The document root must be an object.")
    names = sorted(sig.inputs)
    if "instances" in doc and "inputs" in doc:
        raise invalid("Not both 'instances' and 'inputs' keys may be present in the request.")
    if "instances" in doc:
        rows = doc["instances"]
        if not isinstance(rows, list):
            raise invalid("Expecting 'instances' to be an list/array")
        if not rows:
            raise invalid("No instances found in 'instances' list/array")
        columns = {n: [] for n in names}
        for i, row in enumerate(rows):
            if len(names) == 1 and not (isinstance(row, dict) and set(row) == set(names)):
                columns[names[0]].append(row)
                continue
            if not isinstance(row, dict):
                raise invalid(f"Failed to process element: {i} of 'instances' list. JSON object with named inputs "
                              f"expected, the signature has {len(names)} inputs: {','.join(names)}")
            for n in names:
                if n not in row:
                    raise invalid(f"Failed to process element: {i} of 'instances' list. Error: Invalid argument: "
                                  f"JSON object: does not have named input: {n}")
                columns[n].append(row[n])
            extra = set(row) - set(names)
            if extra:
                raise invalid(f"Failed to process element: {i} of 'instances' list. Error: Invalid argument: "
                              f"JSON object has unknown named input(s): {','.join(sorted(extra))}")
        return {n: json_to_array(columns[n], sig.inputs[n]) for n in names}, "row"
    if "inputs" in doc:
        value = doc["inputs"]
        if isinstance(value, dict) and not (len(names) == 1 and set(value) == {"b64"}):
            for n in names:
                if n not in value:
                    raise invalid(f"Missing named input: {n} in 'inputs' object.")
            extra = set(value) - set(names)
            if extra:
                raise invalid(f"input tensor alias not found in signature: {sorted(extra)[0]}. Inputs expected "
                              f"to be in the set {{{','.join(names)}}}.")
            return {n: json_to_array(value[n], sig.inputs[n]) for n in names}, "columnar"
        if len(names) != 1:
            raise invalid(f"Missing named inputs in 'inputs' object: the signature has {len(names)} inputs: "
                          f"{','.join(names)}")
        return {names[0]: json_to_array(value, sig.inputs[names[0]])}, "columnar"
    raise invalid("Missing 'inputs' or 'instances' key")


def _jsonable(arr: np.ndarray, name: str):
    if arr.dtype == object or arr.dtype.kind in "SU":
        def conv(x):
            b = x if isinstance(x, bytes) else str(x).encode()
            if name.endswith("_bytes"):
                return {"b64": base64.b64encode(b).decode()}
            try:
                return b.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(b).decode()}
        return np.vectorize(conv, otypes=[object])(arr).tolist() if arr.size else arr.tolist()
    if arr.dtype.kind == "f":
        # TF Serving prints floats with about 9 significant digits.
        return np.vectorize(lambda x: float("%.9g" % x) if math.isfinite(x) else float(x),
                            otypes=[object])(arr).tolist() if arr.size else arr.tolist()
    return arr.tolist()


def make_predict_json(outputs: dict[str, np.ndarray], fmt: str) -> dict:
    """MakeJsonFromTensors: row -> {"predictions": ...}, columnar -> {"outputs": ...}."""
    if fmt == "row":
        if len(outputs) == 1:
            (name, arr), = outputs.items()
            return {"predictions": _jsonable(arr, name)}
        sizes = {v.shape[0] if v.ndim else None for v in outputs.values()}
        if len(sizes) != 1 or None in sizes:
            raise invalid("Tensor name: output has inconsistent batch size with other tensors; "
                          "use the columnar ('inputs') format instead")
        cols = {k: _jsonable(v, k) for k, v in outputs.items()}
        return {"predictions": [{k: cols[k][i] for k in cols} for i in range(sizes.pop())]}
    if len(outputs) == 1:
        (name, arr), = outputs.items()
        return {"outputs": _jsonable(arr, name)}
    return {"outputs": {k: _jsonable(v, k) for k, v in outputs.items()}}


def status_json(entries) -> dict:
    """GetModelStatusResponse as TF Serving's JSON (json_name = proto field names)."""
    return {"model_version_status": [
        {"version": str(v), "state": st.state,
         "status": {"error_code": st.error.code if st.error else "OK",
                    "error_message": st.error.message if st.error else ""}}
        for v, st in entries]}


def metadata_json(servable, name: str) -> dict:
    from tensorflow_serving.apis import get_model_metadata_pb2
    sdm = get_model_metadata_pb2.SignatureDefMap()
    if servable.signature_defs is not None:
        for k, v in servable.signature_defs.items():
            sdm.signature_def[k].CopyFrom(v)
    return {"model_spec": {"name": name, "signature_name": "", "version": str(servable.version)},
            "metadata": {"signature_def": json_format.MessageToDict(
                sdm, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)}}


# ------------------------------------------------------------------------------------------ HTTP server

class _Server(ThreadingHTTPServer):
    """One thread per connection (keep-alive clients cannot starve others); at most --rest_api_num_threads
    requests are processed at once, like TF's fixed RequestExecutor pool."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, num_threads: int):
        super().__init__(addr, handler)
        self.slots = threading.BoundedSemaphore(max(1, num_threads))


def make_server(ip: str, port: int, manager, monitoring, opts) -> HTTPServer:
    cors = bool(opts.rest_api_enable_cors_support)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "tfserving-standin"
        # http.server writes the headers and the body in two send()s. With Nagle's algorithm on, the body waits
        # for the client's ACK of the headers, which a keep-alive client delays (delayed ACK, 40 ms on Linux):
        # every request after the first on a connection took >= 40 ms. TF Serving's libevent server
        # (evhttp_send_reply) queues headers and body in one output buffer and has no such stall.
        disable_nagle_algorithm = True

        def log_message(self, fmt, *args):    # quiet, like the real server (VLOG only)
            pass

        def _send(self, code: int, body: bytes, ctype: str = "application/json"):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            if cors and ctype == "application/json":
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Access-Control-Allow-Methods", "POST, GET")
                self.send_header("Access-Control-Allow-Headers", "Content-Type")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n > 0 else b""

        def _dispatch(self, method: str):
            body = self._body() if method == "POST" else b""
            with self.server.slots:
                self._handle(method, urlsplit(self.path).path, body)

        def _handle(self, method: str, path: str, body: bytes):
            if monitoring.prometheus_enable and path == monitoring.prometheus_path:
                if method != "GET":
                    return self._send(400, f"Unexpected method: {method}".encode(), "text/plain")
                return self._send(200, metrics.REGISTRY.render().encode(), "text/plain")
            if not DISPATCH_RE.fullmatch(path):
                return self._send(404, b"<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n"
                                  b"<H1>Not Found</H1>\n</BODY></HTML>\n", "text/html")
            try:
                result = self._process(method, path, body)
                self._send(200, json.dumps(result, indent=1).encode())
            except ServingError as e:
                self._send(e.http_status, json.dumps({"error": e.message}).encode())

        def _prepare_predict(self, name, version, label, body):
            servable = manager.resolve(name, version, label)
            try:
                doc_sig = json.loads(body).get("signature_name", "") if body else ""
            except (ValueError, AttributeError):
                doc_sig = ""
            sig_name = (doc_sig if isinstance(doc_sig, str) else "") or "serving_default"
            if sig_name not in servable.signatures:
                raise invalid(f'Serving signature name: "{sig_name}" not found in signature def')
            inputs, fmt = parse_predict_body(body, servable.signatures[sig_name])
            return servable, sig_name, inputs, fmt

        def _process(self, method: str, path: str, body: bytes):
            err = invalid(f"Malformed request: {method} {path}")
            if method == "POST":
                m = PREDICT_RE.fullmatch(path)
                if not m:
                    raise err
                name, version, label, verb = unquote(m.group(1)), m.group(2), m.group(3), m.group(4).lower()
                version = int(version) if version else None
                if version is not None and label:
                    raise invalid(f"Both model version ({version}) and model version label ({label}) cannot be "
                                  "supplied.")
                if verb != "predict":
                    raise ServingError("UNIMPLEMENTED", f"stand-in: the {verb} API is not implemented "
                                       "(only predict)")
                label = unquote(label) if label else None
                try:
                    servable, sig_name, inputs, fmt = self._prepare_predict(name, version, label, body)
                except ServingError as e:         # counted like the predicts that reach the servable
                    metrics.request_count.inc(name, e.code)
                    raise
                _, _, outputs = manager.predict(name, version, label, sig_name, inputs, [], "REST")
                return make_predict_json(outputs, fmt)
            if method == "GET":
                m = STATUS_RE.fullmatch(path)
                if not m:
                    raise err
                name, version, label, sub = m.group(1), m.group(2), m.group(3), m.group(4)
                if not name:
                    raise invalid("Missing model name in request.")
                name = unquote(name)
                version = int(version) if version else None
                if label:
                    mc = manager.models.get(name)
                    if mc is None or label not in mc.version_labels:
                        raise invalid(f"Unrecognized servable version label: {label}")
                    version = mc.version_labels[label]
                if sub:
                    servable = manager.resolve(name, version)
                    return metadata_json(servable, name)
                return status_json(manager.status(name, version))
            raise err

        def do_GET(self):
            self._dispatch("GET")

        def do_POST(self):
            self._dispatch("POST")

        def do_PUT(self):
            self._dispatch("PUT")

        def do_DELETE(self):
            self._dispatch("DELETE")

    server = _Server((ip, port), Handler, opts.rest_api_num_threads)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
