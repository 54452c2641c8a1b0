"""Server-side batching like TF Serving's BatchingSession over a BasicBatchScheduler.

Concurrent requests are queued and run together: a batch closes when it holds max_batch_size rows (or the next
task does not fit), or batch_timeout_micros after it was opened; num_batch_threads workers run closed batches;
more than max_enqueued_batches open+waiting batches -> UNAVAILABLE. The batch is padded up to the next
allowed_batch_sizes entry (with copies of the first row), run once, and split back per request.
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque

import numpy as np

import metrics
from configs import Batching
from status import ServingError, invalid


class _Task:
    __slots__ = ("inputs", "size", "done", "outputs", "error", "enqueued")

    def __init__(self, inputs, size):
        self.inputs, self.size = inputs, size
        self.done = threading.Event()
        self.outputs = self.error = None
        self.enqueued = time.monotonic()


class _Batch:
    __slots__ = ("tasks", "size", "opened", "closed")

    def __init__(self):
        self.tasks, self.size, self.opened, self.closed = [], 0, time.monotonic(), False


class Batcher:
    def __init__(self, run, options: Batching):
        self.run, self.o = run, options
        self.cv = threading.Condition()
        self.queue: deque[_Batch] = deque()
        self.timeout = max(0, options.batch_timeout_micros) / 1e6
        for i in range(options.num_batch_threads or os.cpu_count() or 1):
            threading.Thread(target=self._worker, name=f"{options.thread_pool_name}_{i}", daemon=True).start()

    def submit(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sizes = set()
        for arr in inputs.values():
            if arr.ndim == 0:
                raise invalid("Batching Run() input tensors must have at least one dimension")
            sizes.add(arr.shape[0])
        if len(sizes) > 1:
            raise invalid("Batching Run() input tensors must have equal 0th-dimension size")
        size = sizes.pop() if sizes else 0
        if size > self.o.max_batch_size:
            raise invalid(f"Task size {size} is larger than maximum input batch size {self.o.max_batch_size}")
        task = _Task(inputs, size)
        metrics.input_batch_size.observe(size)
        with self.cv:
            last = self.queue[-1] if self.queue else None
            if last is None or last.closed or last.size + size > self.o.max_batch_size:
                if last is not None:
                    last.closed = True
                if len(self.queue) >= self.o.max_enqueued_batches:
                    raise ServingError("UNAVAILABLE",
                                       "The batch scheduling queue to which this task was submitted is full")
                last = _Batch()
                self.queue.append(last)
            last.tasks.append(task)
            last.size += size
            if last.size >= self.o.max_batch_size:
                last.closed = True
            self.cv.notify_all()
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    def _worker(self):
        while True:
            with self.cv:
                while True:
                    if self.queue:
                        batch = self.queue[0]
                        remaining = batch.opened + self.timeout - time.monotonic()
                        if batch.closed or remaining <= 0:
                            self.queue.popleft()
                            batch.closed = True
                            break
                        self.cv.wait(remaining)
                    else:
                        self.cv.wait()
            self._process(batch)

    def _process(self, batch: _Batch):
        now = time.monotonic()
        for t in batch.tasks:
            metrics.queuing_latency.observe((now - t.enqueued) * 1e6, self.o.thread_pool_name)
        try:
            names = list(batch.tasks[0].inputs)
            if any(list(t.inputs) != names and set(t.inputs) != set(names) for t in batch.tasks):
                raise invalid("Batching Run() tasks have different input tensor names")
            joined = {}
            for name in names:
                parts = [t.inputs[name] for t in batch.tasks]
                if len({p.shape[1:] for p in parts}) > 1:
                    raise invalid(f"Tensors with name '{name}' from different tasks have different shapes and "
                                  "padding is turned off. Set pad_variable_length_inputs to true, or ensure that "
                                  "all tensors with the same name have equal dimensions starting with the first "
                                  "dim.")
                joined[name] = np.concatenate(parts, axis=0)
            padded = batch.size
            for allowed in self.o.allowed_batch_sizes:
                if allowed >= batch.size:
                    padded = allowed
                    break
            if padded > batch.size:
                for name, arr in joined.items():
                    pad = np.repeat(arr[:1], padded - batch.size, axis=0)
                    joined[name] = np.concatenate([arr, pad], axis=0)
            metrics.padding_size.observe(padded - batch.size, str(padded))
            metrics.processed_batch_size.observe(padded)
            metrics.wrapped_run_count.inc()
            outputs = self.run(joined)
            offset = 0
            for t in batch.tasks:
                t.outputs = {}
                for k, v in outputs.items():
                    if v.ndim == 0 or v.shape[0] != padded:
                        raise ServingError("INTERNAL", f"Batched output tensor {k} has 0th dimension "
                                           f"{v.shape[0] if v.ndim else 'scalar'}, expected {padded}")
                    t.outputs[k] = v[offset:offset + t.size]
                offset += t.size
        except ServingError as e:
            for t in batch.tasks:
                t.error = e
        except Exception as e:          # noqa: BLE001
            for t in batch.tasks:
                t.error = ServingError("INTERNAL", str(e))
        finally:
            for t in batch.tasks:
                t.done.set()
