"""Task types: the registry and everything derived from it, and the shipped handlers."""

import pytest
from django.conf import settings
from django.urls import reverse
from sympy import primepi

from factorize_app.tasks import TaskTypeError, task_types
from factorize_app.tasks.factorization.model import Factorizer
from factorize_app.tasks.primes.model import PrimeCounter
from factorize_app.tasks.registry import _registry


def test_queues_and_urls_derive_from_the_registry():
    names = [t.name for t in task_types()]
    assert names == [
        "factorization", "primes", "digits", "slow_setup", "sleepy", "failing", "batched", "slow_batch", "crashing"
    ]
    assert sorted(settings.RQ_QUEUES) == sorted(names)
    for task_type in task_types():
        assert reverse(f"{task_type.name}-list") == f"/{task_type.path}"
    assert settings.RQ_QUEUES["sleepy"]["DEFAULT_TIMEOUT"] == 3
    assert settings.RQ_QUEUES["factorization"]["DEFAULT_TIMEOUT"] == settings.JOB_TIMEOUT


def test_factorize_matches_the_seed_and_handles_big_numbers():
    factorize = Factorizer().handle
    assert factorize({"number": 408216}) == {
        "factorization": [[2, 3], [3, 1], [73, 1], [233, 1]],
        "factorization_str": "2^3 3^1 73^1 233^1",
    }
    assert factorize({"number": 2**64 + 1})["factorization_str"] == "274177^1 67280421310721^1"
    assert factorize({"number": 2})["factorization"] == [[2, 1]]


def test_primes_agree_with_sympy_primepi():
    counter = PrimeCounter()
    counter.setup()
    count_primes = counter.handle
    for n in [2, 3, 4, 10, 100, 408216, 999_983, 10**7]:
        result = count_primes({"n": n})
        assert result["count"] == primepi(n)
        assert primepi(result["largest"]) == result["count"]
        assert primepi(result["largest"] - 1) == result["count"] - 1


@pytest.mark.parametrize(
    "entries, message",
    [
        (["factorize_app.tasks.nothing.TASK_TYPE"], "could not import"),
        (["factorize_app.tasks.primes.SIEVE_LIMIT"], "not a TaskType"),
        (["factorize_app.tasks.primes.TASK_TYPE", "factorize_app.tasks.primes.TASK_TYPE"], "reuses"),
    ],
)
def test_bad_registrations_fail_with_a_clear_error(settings, entries, message):
    settings.TASK_TYPES = entries
    _registry.cache_clear()
    try:
        with pytest.raises(TaskTypeError, match=message):
            task_types()
    finally:
        _registry.cache_clear()  # the settings fixture restores TASK_TYPES after the test


def test_factorization_reports_its_stages_and_agrees_with_sympy():
    from sympy import factorint, nextprime

    factorizer = Factorizer()
    for number in [2, 4, 408216, 2**64 + 1, 10**30, 3**40 * 7, 2**127 - 1, 1000003**3]:
        expected = [[int(p), int(e)] for p, e in sorted(factorint(number).items())]
        assert factorizer.handle({"number": number})["factorization"] == expected
    reports = []
    semiprime = nextprime(10**11) * nextprime(10**12)  # past trial division, found by Pollard rho
    factorizer.handle({"number": semiprime}, progress=lambda fraction, message: reports.append(message))
    assert reports[:2] == ["trial division", "Pollard rho"]


def test_a_handler_that_ignores_progress_keeps_working():
    from factorize_app.tasks import get_task_type

    primes = get_task_type("primes")
    primes.setup()
    assert primes.handler({"n": 10}, progress=lambda fraction, message: None) == {"count": 4, "largest": 7}
