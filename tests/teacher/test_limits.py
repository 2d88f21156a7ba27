"""Adaptive concurrency, sliding-window rate limits and the token estimate."""

from __future__ import annotations

import asyncio
import bisect
import time

from datagen.teacher.limits import AdaptiveConcurrency, WindowLimiter, estimate_tokens


def max_in_any_window(stamps: list[float], window: float) -> int:
    stamps = sorted(stamps)
    return max(bisect.bisect_left(stamps, t + window) - i for i, t in enumerate(stamps))


def test_window_limiter_never_exceeds_the_limit_in_any_window():
    async def main():
        limiter = WindowLimiter(10, window=0.5, guard=0.0)
        stamps = []

        async def one():
            await limiter.acquire(1)
            stamps.append(time.monotonic())

        await asyncio.gather(*(one() for _ in range(35)))
        return stamps

    stamps = asyncio.run(main())
    assert len(stamps) == 35
    assert max_in_any_window(stamps, 0.5) <= 10


def test_window_limiter_paces_instead_of_bursting_the_whole_window():
    async def main():
        limiter = WindowLimiter(600, window=60.0)  # 10 per second, burst of 10
        start = time.monotonic()
        stamps = []
        for _ in range(15):
            await limiter.acquire(1)
            stamps.append(time.monotonic() - start)
        return stamps

    stamps = asyncio.run(main())
    # The first 10 go at once (the burst); the rest follow at the sustained pace of one per 0.1 s.
    assert stamps[9] < stamps[14]
    assert stamps[14] - stamps[10] >= 0.35


def test_token_settle_refunds_an_overestimate():
    async def main():
        limiter = WindowLimiter(100, window=2.0)
        handle = await limiter.acquire(90)
        assert limiter.in_window == 90
        limiter.settle(handle, 30)
        assert limiter.in_window == 30
        await asyncio.wait_for(limiter.acquire(60), timeout=1.5)  # fits in the window now
        return limiter.in_window

    assert asyncio.run(main()) == 90


def test_an_amount_above_the_limit_is_admitted_alone_not_never():
    async def main():
        limiter = WindowLimiter(10, window=0.2)
        await asyncio.wait_for(limiter.acquire(50), timeout=5)
        return limiter.in_window

    assert asyncio.run(main()) == 50


def test_adaptive_concurrency_halves_once_per_wave_and_grows_back():
    async def main():
        sem = AdaptiveConcurrency(16)
        epochs = [await sem.acquire() for _ in range(16)]
        assert sem.active == 16
        # A wave of 429s from requests started in the same epoch lowers the limit once, as soon as
        # there are enough answers to tell (min(limit, 32) = 16 here) and most of them are 429s.
        assert [sem.pushed_back(e) for e in epochs[:15]] == [False] * 15
        assert sem.limit == 16
        assert sem.pushed_back(epochs[15]) is True and sem.limit == 8
        assert sem.pushed_back(epochs[0]) is True and sem.limit == 8  # still overloaded, same wave
        for _ in range(16):
            sem.release()
        e = await sem.acquire()
        sem.release()
        assert sem.pushed_back(e) and sem.limit == 4
        for _ in range(4 + 5):
            sem.succeeded()
        assert sem.limit == 6
        for _ in range(1000):
            sem.succeeded()
        return sem.limit

    assert asyncio.run(main()) == 16


def test_a_minority_of_429s_lowers_nothing():
    """30% of answers 429 is a server refusing some requests, not one we overload: halving on each
    wave of them took 128 slots down to a handful (302 -> 4 requests/s in the issue's storm)."""

    async def main():
        sem = AdaptiveConcurrency(128)
        verdicts = []
        for i in range(2000):
            e = await sem.acquire()
            sem.release()
            if i % 10 < 3:
                verdicts.append(sem.pushed_back(e))
            else:
                sem.succeeded()
        return sem.limit, verdicts

    limit, verdicts = asyncio.run(main())
    assert limit == 128
    assert not any(verdicts)


def test_adaptive_concurrency_blocks_beyond_the_limit():
    async def main():
        sem = AdaptiveConcurrency(2)
        await sem.acquire()
        await sem.acquire()
        waiter = asyncio.ensure_future(sem.acquire())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        sem.release()
        await asyncio.wait_for(waiter, timeout=1)
        cancelled = asyncio.ensure_future(sem.acquire())
        await asyncio.sleep(0.01)
        cancelled.cancel()
        await asyncio.gather(cancelled, return_exceptions=True)
        sem.release()
        sem.release()
        return sem.active

    assert asyncio.run(main()) == 0


def test_token_estimate_counts_cjk_characters_more_than_ascii():
    en = estimate_tokens([{"role": "user", "content": "hello world " * 40}])
    zh = estimate_tokens([{"role": "user", "content": "你好世界" * 40}])
    assert 100 <= en <= 150  # 480 characters of English
    assert 150 <= zh <= 180  # 160 Chinese characters
    assert estimate_tokens([]) < estimate_tokens([{"role": "user", "content": ""}])


def test_window_counts_from_the_answer_for_fast_calls_and_send_plus_guard_for_slow_ones():
    async def main():
        limiter = WindowLimiter(1, window=0.3, guard=30.0)
        a = await limiter.acquire(1)
        now = time.monotonic()
        limiter.sent(a, now)
        assert a[0] >= now + 30  # in flight: it might reach the server up to `guard` later
        limiter.finished(a, now + 0.01)  # answered: it reached the server before now + 0.01
        c = await asyncio.wait_for(limiter.acquire(1), timeout=2)  # so the window frees in ~0.3 s
        limiter.sent(c, time.monotonic())  # c is sent and never answered: held for the guard
        blocked = asyncio.ensure_future(limiter.acquire(1))
        done, _ = await asyncio.wait([blocked], timeout=0.8)
        blocked.cancel()
        await asyncio.gather(blocked, return_exceptions=True)
        return bool(done)

    assert asyncio.run(main()) is False
