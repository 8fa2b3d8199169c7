"""Task types: the registry and everything derived from it, and the shipped handlers."""

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils.module_loading import import_string
from sympy import primepi

from factorize_app.tasks import TaskTypeError, task_types
from factorize_app.tasks.factorization.model import Factorizer
from factorize_app.tasks.primes.model import PrimeCounter
from factorize_app.tasks.registry import _registry
from factorize_app.tasks.streaming import run_to_end
from project.task_discovery import discover_task_types

TEST_ONLY = ["slow_setup", "sleepy", "failing", "batched", "slow_batch", "crashing",
             "file_out", "short_file_out", "large_json", "speller"]  # tests/settings.py  # fmt: skip


def test_queues_and_urls_derive_from_the_registry():
    names = [t.name for t in task_types()]
    # Every model found under factorize_app/tasks/, in order of folder name, then the test-only types.
    folders = [path.split(".")[2] for path in settings.DEFAULT_TASK_TYPES]
    assert folders == sorted(folders) and {"digits", "factorization", "primes"} <= set(folders)
    assert names == [import_string(path).name for path in settings.DEFAULT_TASK_TYPES] + TEST_ONLY
    assert sorted(settings.RQ_QUEUES) == sorted(names)
    for task_type in task_types():
        assert reverse(f"{task_type.name}-list") == f"/{task_type.path}"
    assert settings.RQ_QUEUES["sleepy"]["DEFAULT_TIMEOUT"] == 3
    assert settings.RQ_QUEUES["factorization"]["DEFAULT_TIMEOUT"] == settings.JOB_TIMEOUT


def test_factorize_matches_the_seed_and_handles_big_numbers():
    def factorize(data):
        return run_to_end(Factorizer().handle(data))

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


def test_every_task_package_is_discovered_and_nothing_else(tmp_path):
    packages = {
        "zeta": "TASK_TYPE = TaskType(...)\n",
        "alpha": "from factorize_app.tasks.alpha.declaration import TASK_TYPE\n",
        "typed": "TASK_TYPE: TaskType = make()\n",
        "broken": "TASK_TYPE = (\n",  # the import reports what is wrong, rather than the type vanishing
        "helpers": "SHARED = 1\n",  # a package of shared code, no task type
        "_private": "TASK_TYPE = None\n",
        "not-a-package": "TASK_TYPE = None\n",
    }
    for folder, text in packages.items():
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text(text)
    (tmp_path / "no_init").mkdir()
    (tmp_path / "module.py").write_text("TASK_TYPE = None\n")
    found = discover_task_types(tmp_path, package="p")
    assert found == [f"p.{name}.TASK_TYPE" for name in ("alpha", "broken", "typed", "zeta")]


@pytest.mark.parametrize(
    "entries, expected",
    [
        (["primes"], ["primes"]),  # a folder name narrows to that model
        (["factorize_app.tasks.digits.TASK_TYPE", "tests.task_types.SLEEPY"], ["digits", "sleepy"]),
        # `*`: every discovered model, but for one listed on its own, which keeps its place.
        (["primes", "*", "tests.task_types.SLEEPY"], ["primes", "...", "sleepy"]),
    ],
)
def test_task_types_narrow_or_extend_the_discovered_set(settings, entries, expected):
    discovered = [import_string(path).name for path in settings.DEFAULT_TASK_TYPES]
    if "..." in expected:
        expected = ["primes", *(name for name in discovered if name != "primes"), "sleepy"]
    settings.TASK_TYPES = entries
    _registry.cache_clear()
    try:
        assert [task_type.name for task_type in task_types()] == expected
    finally:
        _registry.cache_clear()


def test_factorization_reports_its_stages_and_agrees_with_sympy():
    from sympy import factorint, nextprime

    factorizer = Factorizer()
    for number in [2, 4, 408216, 2**64 + 1, 10**30, 3**40 * 7, 2**127 - 1, 1000003**3]:
        expected = [[int(p), int(e)] for p, e in sorted(factorint(number).items())]
        assert run_to_end(factorizer.handle({"number": number}))["factorization"] == expected
    reports = []
    semiprime = nextprime(10**11) * nextprime(10**12)  # past trial division, found by Pollard rho
    run_to_end(factorizer.handle({"number": semiprime}, progress=lambda fraction, message: reports.append(message)))
    assert reports[0] == "trial division" and reports[1].startswith("trial division, Pollard p-1 and rho")


def test_factorization_with_progress_is_factorints_and_its_progress_only_grows():
    from sympy import factor_cache, factorint, nextprime

    factorizer = Factorizer()
    numbers = [
        9,  # below factorint's table
        2**10 * 3**5 * 1009,  # trial division only
        nextprime(10**15) ** 3,  # a prime power
        nextprime(10**17) * nextprime(10**17 + 10**8),  # close factors: Fermat's method
        nextprime(10**9) * nextprime(10**10),  # Pollard rho, in one of its doubling rounds
        nextprime(10**11) * nextprime(10**13),  # ECM (25 digits: past Pollard's rounds)
        nextprime(10**9) * nextprime(2 * 10**9) * nextprime(3 * 10**9),  # ECM, three factors
    ]

    def staged(number: int) -> tuple[list, list[tuple]]:
        reports: list[tuple] = []
        factor_cache.cache_clear()  # factorint remembers factors: the staged path should find them itself
        result = run_to_end(factorizer.handle({"number": number}, progress=lambda *report: reports.append(report)))
        return result["factorization"], reports

    for number in numbers:
        factorization, reports = staged(number)
        assert factorization == [[int(p), e] for p, e in sorted(factorint(number).items())], number
        fractions = [fraction for fraction, _ in reports if fraction is not None]  # None: not known
        assert all(0 <= fraction < 1 for fraction in fractions) and fractions == sorted(fractions), reports
        assert all(message for _, message in reports)
        assert all(fraction is not None for fraction, message in reports if message.startswith("ECM, curve "))
    assert any(message.startswith("ECM, curve ") for _, message in reports), reports  # the last number's


def test_a_handler_that_ignores_progress_keeps_working():
    from factorize_app.tasks import get_task_type

    primes = get_task_type("primes")
    primes.setup()
    assert primes.handler({"n": 10}, progress=lambda fraction, message: None) == {"count": 4, "largest": 7}
