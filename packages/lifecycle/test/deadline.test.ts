import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { remainingTimeInMillis, settleWithin } from "../src/index.ts";

describe("remainingTimeInMillis: what Lambda says is left, minus a reserve", () => {
	it("subtracts the reserve from the context's clock", () => {
		expect(remainingTimeInMillis({ getRemainingTimeInMillis: () => 1_000 }, 200, 5_000)).toBe(800);
	});

	it("is never negative when less than the reserve is left", () => {
		expect(remainingTimeInMillis({ getRemainingTimeInMillis: () => 100 }, 200, 5_000)).toBe(0);
	});

	it.each<[string, { getRemainingTimeInMillis?: () => number } | undefined]>([
		["no context", undefined],
		["a context without a clock (tests, local runs)", {}],
		["a clock that says NaN", { getRemainingTimeInMillis: () => Number.NaN }],
		["a clock that says Infinity", { getRemainingTimeInMillis: () => Number.POSITIVE_INFINITY }],
	])("falls back with %s", (_case, context) => {
		expect(remainingTimeInMillis(context, 200, 5_000)).toBe(5_000);
	});
});

describe("settleWithin: waits for a promise at most so long, and never rejects", () => {
	it("says ok for a promise that fulfils in time", async () => {
		expect(await settleWithin(sleep(5, "value"), 1_000)).toEqual({ ok: true });
	});

	it("hands back the error of a promise that rejects in time", async () => {
		const error = new Error("failed");
		expect(await settleWithin(Promise.reject(error), 1_000)).toEqual({ ok: false, timedOut: false, error });
	});

	it("says timedOut for a promise still pending at the bound", async () => {
		expect(await settleWithin(new Promise(() => {}), 20)).toEqual({ ok: false, timedOut: true });
	});

	it("says timedOut at once for a bound of 0", async () => {
		expect(await settleWithin(new Promise(() => {}), 0)).toEqual({ ok: false, timedOut: true });
	});

	it("waits without a bound for Infinity", async () => {
		expect(await settleWithin(sleep(20), Number.POSITIVE_INFINITY)).toEqual({ ok: true });
	});

	it("handles the rejection of a promise it stopped waiting for (no unhandled rejection)", async () => {
		const unhandled: unknown[] = [];
		const onUnhandled = (reason: unknown) => void unhandled.push(reason);
		process.on("unhandledRejection", onUnhandled);
		try {
			const late = sleep(20).then(() => {
				throw new Error("too late");
			});
			expect(await settleWithin(late, 5)).toEqual({ ok: false, timedOut: true });
			await sleep(40);
			expect(unhandled).toEqual([]);
		} finally {
			process.off("unhandledRejection", onUnhandled);
		}
	});
});
