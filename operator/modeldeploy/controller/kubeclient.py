"""The kubernetes client's `DynamicClient` as `apply.Kube` sends its requests through it.

- `CountingClient.request` is the one point every HTTP request passes, the dynamic client's own discovery
  requests included: each is counted (the `count` callback) and gets the request timeout.
- `plain` is the serializer hook that keeps answers as the decoded JSON: plain dicts, which the operator compares,
  copies and mutates. The default ResourceInstance wraps every field (about 0.5 ms more per Deployment-sized
  object, measured; the operator handles thousands) only for `to_dict()` to unwrap it again.
- `MemoryDiscoverer`: lazy discovery (the client's LazyDiscoverer: /version and /apis when the client is made,
  then one GET per group/version when a kind of it is first looked up) kept in memory only. The default keeps a
  file in the temp dir named after the server URL, which many clusters share (https://10.96.0.1:443 in every pod
  with the default Service CIDR, 127.0.0.1:<port> for local clusters recreated on a fixed port): it could
  describe another cluster, or this one before a CRD came or went. The operator's root filesystem is read-only
  anyway (only /tmp, an emptyDir, is writable).
- `resource(api)`: a kind's API resource (plural, scope, subresources, paths), discovered once and kept.
- `served(group_version, plural)`: asks discovery again about one group/version (a CRD installed or removed).
The discoverer's caches are not thread-safe: every use of it holds `_lock`.
"""
from __future__ import annotations

import os
import threading
from typing import Callable

from kubernetes.dynamic import DynamicClient, LazyDiscoverer, Resource, ResourceList

from modeldeploy.resources.kinds import ApiKind

# /dev/null is no directory: nothing can exist under it, so the discoverer never finds a cache file to load.
NO_CACHE_FILE = os.path.join(os.devnull, "discovery.json")


def plain(_client, data):
    """The dynamic client's serializer hook: the decoded JSON as it is."""
    return data


class MemoryDiscoverer(LazyDiscoverer):
    """LazyDiscoverer without its file cache: discovery lives as long as the client."""

    def __init__(self, client, cache_file=None):
        super().__init__(client, NO_CACHE_FILE)

    def _write_cache(self):
        pass        # nowhere to write; and the discoverer would serialize its whole cache at every new group/version


class CountingClient(DynamicClient):
    """DynamicClient whose every request is counted and time-limited, and whose kinds are resolved once."""

    def __init__(self, api_client, count: Callable[[], None], timeout):
        # Set before DynamicClient.__init__: its discoverer sends the first requests.
        self._count, self._timeout = count, timeout
        self._lock = threading.Lock()
        self._kinds: dict[tuple[str, str, str], Resource] = {}
        super().__init__(api_client, discoverer=MemoryDiscoverer)

    def request(self, method, path, body=None, **params):
        self._count()
        params.setdefault("_request_timeout", self._timeout)
        return super().request(method, path, body, **params)

    def resource(self, api: ApiKind) -> Resource:
        """The API resource of a kind. Raises ResourceNotFoundError when not served, ApiException on failure."""
        key = (api.group, api.version, api.kind)
        found = self._kinds.get(key)
        if found is None:
            with self._lock:
                # The prefix and group/version narrow the search to one group/version: the lazy discoverer fetches
                # every group/version a search touches ("v1" without the prefix matches every group's v1).
                found = self.resources.get(prefix="apis" if api.group else "api", api_version=api.api_version,
                                           kind=api.kind)
                self._kinds[key] = found
        return found

    def served(self, group_version: str, plural: str) -> Resource | None:
        """The resource `plural` of group/version as discovery finds it now (one GET), or None. Raises
        ApiException when the group/version is not served (404) or discovery fails. Not the discoverer's
        refresh on a miss: that re-reads /version, /apis and then every group/version used since."""
        group, _, version = group_version.rpartition("/")
        with self._lock:
            served = self.resources.get_resources_for_api_version("apis" if group else "api", group, version, True)
        for resource in (r for rs in served.values() for r in rs if not isinstance(r, ResourceList)):
            if resource.name == plural:
                # A kind installed after start: written without the full rediscovery a lookup miss costs.
                self._kinds[(group, version, resource.kind)] = resource
                return resource
        return None
