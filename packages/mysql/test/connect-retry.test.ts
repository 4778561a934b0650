// The connect retry's policy on its own: how long it waits between connects, and when it stops. No database here:
// what a full server answers is tested for real in server-full.test.ts; this pins the arithmetic of the backoff
// (full jitter under a cap that doubles up to maxDelay) and the bounds (attempts, remaining time, the invocation's
// signal), with a connect function that fails as told.
import { afterEach, describe, expect, it, vi } from "vitest";
import {
	type ConnectRetry,
	connectRetryDefaults,
	type RetryScope,
	retryDelay,
	serverFullCodes,
	withConnectRetry,
} from "../src/connect-retry.ts";

/** An error as mysql2 reports a refused connect. */
const refused = (code = "ER_CON_COUNT_ERROR") => Object.assign(new Error("Too many connections"), { code });

/** A connect that fails with `errors` in turn, then succeeds with "connected"; counts its calls. */
const fakeConnect = (errors: Error[]) => {
	let calls = 0;
	const connect = async () => {
		const error = errors[calls];
		calls += 1;
		if (error) throw error;
		return "connected";
	};
	return { connect, calls: () => calls };
};

/** A scope with `remaining` as the invocation's remaining time (a number, or one value per call). */
const scopeWith = (remaining?: number | (() => number), signal = new AbortController().signal) => {
	const retries = { count: 0 };
	const scope: RetryScope = {
		signal,
		context:
			remaining === undefined
				? undefined
				: { getRemainingTimeInMillis: typeof remaining === "number" ? () => remaining : remaining },
		onRetry: () => {
			retries.count += 1;
		},
	};
	return { scope, retries };
};

/** Waits of at most 1 ms: the bounds are tested, not the waiting. */
const quick: ConnectRetry = { attempts: 10, baseDelay: 1, maxDelay: 1 };

afterEach(() => {
	vi.restoreAllMocks();
});

describe("retryDelay: full jitter under a cap that doubles", () => {
	it("caps the wait at baseDelay × 2^retry, up to maxDelay", () => {
		// the largest draw Math.random can give: the wait is (just under) the cap itself
		vi.spyOn(Math, "random").mockReturnValue(1 - Number.EPSILON);
		const caps = Array.from({ length: 9 }, (_, retry) => Math.round(retryDelay(connectRetryDefaults, retry)));

		expect(caps).toEqual([25, 50, 100, 200, 400, 800, 1000, 1000, 1000]);
	});

	it("waits a random share of the cap: within [0, cap), and not the same each time", () => {
		const policy: ConnectRetry = { attempts: 10, baseDelay: 100, maxDelay: 400 };
		for (const [retry, cap] of [
			[0, 100],
			[1, 200],
			[2, 400],
			[5, 400],
		] as const) {
			const delays = Array.from({ length: 200 }, () => retryDelay(policy, retry));
			expect(Math.min(...delays)).toBeGreaterThanOrEqual(0);
			expect(Math.max(...delays)).toBeLessThan(cap);
			// 200 uniform draws: all in one tenth of the range would mean no jitter at all
			expect(Math.max(...delays) - Math.min(...delays)).toBeGreaterThan(cap / 10);
		}
	});

	it("can wait no time at all: the lowest draw is 0", () => {
		vi.spyOn(Math, "random").mockReturnValue(0);
		expect(retryDelay(connectRetryDefaults, 4)).toBe(0);
	});
});

describe("withConnectRetry", () => {
	it("retries the codes of a full server, and nothing else", () => {
		expect(serverFullCodes).toEqual([
			"ER_CON_COUNT_ERROR",
			"ER_TOO_MANY_USER_CONNECTIONS",
			"ER_USER_LIMIT_REACHED",
		]);
	});

	it.each(serverFullCodes)("returns the connection once a connect refused with %s succeeds", async (code) => {
		const { connect, calls } = fakeConnect([refused(code), refused(code)]);
		const { scope, retries } = scopeWith(10_000);

		expect(await withConnectRetry(quick, scope, connect)).toBe("connected");
		expect(calls()).toBe(3);
		expect(retries.count).toBe(2);
	});

	it("stops after `attempts` connects, the first included, with the last refusal", async () => {
		const errors = Array.from({ length: 10 }, () => refused());
		const { connect, calls } = fakeConnect(errors);
		const { scope, retries } = scopeWith(10_000);

		const failure = withConnectRetry({ ...quick, attempts: 4 }, scope, connect);

		await expect(failure).rejects.toBe(errors[3]);
		expect(calls()).toBe(4);
		expect(retries.count).toBe(3);
	});

	it("does not retry another error (access denied, a network error)", async () => {
		for (const code of ["ER_ACCESS_DENIED_ERROR", "ECONNREFUSED"]) {
			const error = refused(code);
			const { connect, calls } = fakeConnect([error]);
			const { scope, retries } = scopeWith(10_000);

			await expect(withConnectRetry(quick, scope, connect)).rejects.toBe(error);
			expect(calls()).toBe(1);
			expect(retries.count).toBe(0);
		}
	});

	it("does not retry at all when the policy is false", async () => {
		const error = refused();
		const { connect, calls } = fakeConnect([error]);
		const { scope, retries } = scopeWith(10_000);

		await expect(withConnectRetry(false, scope, connect)).rejects.toBe(error);
		expect(calls()).toBe(1);
		expect(retries.count).toBe(0);
	});

	it("stops before a wait that would end past the invocation's remaining time", async () => {
		// every wait is half the cap (10 ms); the invocation has 100, then 30, then 8 ms left when refused
		vi.spyOn(Math, "random").mockReturnValue(0.5);
		const left = [100, 30, 8];
		const errors = Array.from({ length: 10 }, () => refused());
		const { connect, calls } = fakeConnect(errors);
		const { scope, retries } = scopeWith(() => left[calls() - 1] ?? 0);

		const failure = withConnectRetry({ attempts: 10, baseDelay: 20, maxDelay: 20 }, scope, connect);

		// two retries, then no third: a 10 ms wait does not fit in the 8 ms left
		await expect(failure).rejects.toBe(errors[2]);
		expect(calls()).toBe(3);
		expect(retries.count).toBe(2);
	});

	it("does not retry when even the first wait would not fit", async () => {
		vi.spyOn(Math, "random").mockReturnValue(0.5);
		const error = refused();
		const { connect, calls } = fakeConnect([error]);
		const { scope, retries } = scopeWith(50);

		await expect(
			withConnectRetry({ attempts: 10, baseDelay: 1000, maxDelay: 1000 }, scope, connect),
		).rejects.toBe(error);
		expect(calls()).toBe(1);
		expect(retries.count).toBe(0);
	});

	it("without a Lambda context, is bounded by attempts only", async () => {
		const errors = Array.from({ length: 10 }, () => refused());
		const { connect, calls } = fakeConnect(errors);
		const { scope } = scopeWith(undefined);

		await expect(withConnectRetry({ ...quick, attempts: 3 }, scope, connect)).rejects.toBe(errors[2]);
		expect(calls()).toBe(3);
	});

	it("ends a wait at once when the invocation gives up, with the last refusal", async () => {
		const controller = new AbortController();
		const error = refused();
		const { connect, calls } = fakeConnect([error, refused()]);
		const { scope } = scopeWith(60_000, controller.signal);

		// a wait of 30 s, aborted as soon as it has begun
		vi.spyOn(Math, "random").mockReturnValue(0.5);
		const failure = withConnectRetry(
			{ attempts: 10, baseDelay: 60_000, maxDelay: 60_000 },
			{
				...scope,
				onRetry: () => {
					scope.onRetry();
					queueMicrotask(() => controller.abort());
				},
			},
			connect,
		);

		await expect(failure).rejects.toBe(error);
		expect(calls()).toBe(1);
	});

	it("does not start a retry once the invocation has given up", async () => {
		const controller = new AbortController();
		controller.abort();
		const error = refused();
		const { connect, calls } = fakeConnect([error]);
		const { scope, retries } = scopeWith(10_000, controller.signal);

		await expect(withConnectRetry(quick, scope, connect)).rejects.toBe(error);
		expect(calls()).toBe(1);
		expect(retries.count).toBe(0);
	});
});
