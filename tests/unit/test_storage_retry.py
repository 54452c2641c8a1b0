"""Retries are bounded and only for transient errors; library errors become user-facing exit codes."""
import pytest

from modeldeploy.storage import errors, retry


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    monkeypatch.setattr(retry, "BASE_DELAY", 0.001)


class Flaky:
    def __init__(self, failures, exc):
        self.failures, self.exc, self.calls = failures, exc, 0

    def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return "ok"


def test_transient_errors_are_retried_until_success():
    fn = Flaky(2, ConnectionError("Connection refused"))
    assert retry.call(fn, what="reading x", attempts=4) == "ok"
    assert fn.calls == 3


def test_retries_are_bounded_and_end_in_storage_unreachable():
    fn = Flaky(100, TimeoutError("timed out"))
    with pytest.raises(errors.StorageUnreachable) as err:
        retry.call(fn, what="reading s3://b/k", attempts=3)
    assert fn.calls == 3
    assert err.value.exit_code == 3 and "reading s3://b/k" in err.value.message


@pytest.mark.parametrize("exc, cls", [
    (PermissionError("Forbidden"), errors.MissingCredentials),
    (Exception("NoCredentialsError: Unable to locate credentials"), errors.MissingCredentials),
    (OSError("An error occurred (InvalidAccessKeyId)"), errors.MissingCredentials),
    (FileNotFoundError("models/x"), errors.NotFound),
    (ValueError("something else"), errors.StorageUnreachable),
])
def test_non_transient_errors_fail_at_once(exc, cls):
    fn = Flaky(100, exc)
    with pytest.raises(cls):
        retry.call(fn, what="reading x", attempts=5)
    assert fn.calls == 1


def test_credential_errors_are_not_mistaken_for_transient():
    assert not retry.is_transient(OSError("403 AccessDenied, 503 in text"))
    assert retry.is_transient(OSError("SlowDown: please reduce your request rate"))


def test_exit_codes_are_distinct():
    codes = [cls.exit_code for cls in errors.ALL]
    assert len(codes) == len(set(codes))
    assert 0 not in codes and 1 not in codes
