"""gRPC API: tensorflow.serving.PredictionService (Predict, GetModelMetadata) and ModelService (GetModelStatus),
with the servicers of tensorflow-serving-api; grpc.health.v1.Health only with --enable_grpc_healthcheck_service
(the flag recent main.cc has; the real server registers no health service otherwise)."""
from __future__ import annotations

from concurrent import futures

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from status import CODES, ServingError, invalid

_STATE = {"START": 10, "LOADING": 20, "AVAILABLE": 30, "UNLOADING": 40, "END": 50}


def _abort(context, e: ServingError):
    context.abort(e.grpc_code(), e.message)


def _spec(model_spec):
    version = model_spec.version.value if model_spec.HasField("version") else None
    label = model_spec.version_label if model_spec.WhichOneof("version_choice") == "version_label" else None
    return model_spec.name, version, label


class Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager):
        self.m = manager

    def Predict(self, request, context):
        try:
            name, version, label = _spec(request.model_spec)
            try:
                inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            except Exception as e:          # noqa: BLE001
                raise invalid(f"tensor parsing error: {e}") from e
            sig_name = request.model_spec.signature_name or "serving_default"
            servable, sig, outputs = self.m.predict(name, version, label, sig_name, inputs,
                                                    list(request.output_filter), "GRPC")
            resp = predict_pb2.PredictResponse()
            resp.model_spec.name = name
            resp.model_spec.version.value = servable.version
            resp.model_spec.signature_name = sig.name
            for k, v in outputs.items():
                resp.outputs[k].CopyFrom(tf.make_tensor_proto(v))
            return resp
        except ServingError as e:
            _abort(context, e)

    def GetModelMetadata(self, request, context):
        try:
            if not request.metadata_field:
                raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
            for f in request.metadata_field:
                if f != "signature_def":
                    raise invalid(f"Metadata field {f} is not supported")
            name, version, label = _spec(request.model_spec)
            servable = self.m.resolve(name, version, label)
            resp = get_model_metadata_pb2.GetModelMetadataResponse()
            resp.model_spec.name = name
            resp.model_spec.version.value = servable.version
            sdm = get_model_metadata_pb2.SignatureDefMap()
            for k, v in (servable.signature_defs or {}).items():
                sdm.signature_def[k].CopyFrom(v)
            resp.metadata["signature_def"].Pack(sdm)
            return resp
        except ServingError as e:
            _abort(context, e)

    def _unimplemented(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "stand-in: only Predict and GetModelMetadata are implemented")

    Classify = Regress = MultiInference = _unimplemented


class Model(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager):
        self.m = manager

    def GetModelStatus(self, request, context):
        try:
            if not request.HasField("model_spec"):
                raise invalid("Missing ModelSpec")
            name, version, label = _spec(request.model_spec)
            if label:
                mc = self.m.models.get(name)
                if mc is None or label not in mc.version_labels:
                    raise invalid(f"Unrecognized servable version label: {label}")
                version = mc.version_labels[label]
            resp = get_model_status_pb2.GetModelStatusResponse()
            for v, st in self.m.status(name, version):
                mvs = resp.model_version_status.add(version=v, state=_STATE[st.state])
                mvs.status.error_code = CODES[st.error.code] if st.error else 0
                mvs.status.error_message = st.error.message if st.error else ""
            return resp
        except ServingError as e:
            _abort(context, e)

    def HandleReloadConfigRequest(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "stand-in: config reload is not implemented")


def make_server(ip: str, port: int, manager, opts):
    """Build and start; returns (server, bound port) - bound port 0 means the address could not be bound."""
    options = [("grpc.max_receive_message_length", 2 ** 31 - 1), ("grpc.max_send_message_length", 2 ** 31 - 1),
               ("grpc.so_reuseport", 0)]
    for arg in filter(None, opts.grpc_channel_arguments.split(",")):
        key, _, value = arg.partition("=")
        try:
            options.append((key, int(value)))
        except ValueError:
            options.append((key, value))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max(1, opts.grpc_max_threads),
                                                    thread_name_prefix="grpc"), options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Prediction(manager), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(Model(manager), server)
    if opts.enable_grpc_healthcheck_service:
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
        servicer = health.HealthServicer()
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        for svc in ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"):
            servicer.set(svc, health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(f"{ip}:{port}")
    except RuntimeError:
        bound = 0
    if bound == 0:
        return None, 0
    server.start()
    return server, bound
