// The Middy internals the lifecycle relies on (the numbered points at the top of src/middy-request.ts), pinned
// against the lowest @middy/core 7.x that can be loaded and the current one. Each test drives real Middy and
// records what the observer is told, and when.
//
// The floor, and the peer range's lower bound, is 7.8.0. Before it, Middy's catch ran `err.originalError =
// request.error` on whatever an onError threw: for a string or null that assignment itself throws a TypeError
// (ESM is strict), so request.error was never assigned, nothing could see the rethrow, and what the invocation
// held stayed open. (7.0.0 cannot even be imported without @aws/durable-execution-sdk-js installed.)
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import middyCurrent, { type MiddlewareObj, type Request } from "@middy/core";
import middyFloor from "@middy/core-floor";
import type { Context } from "aws-lambda";
import { describe, expect, it } from "vitest";
import { isMiddyTimeout, type MiddyRequestObserver, observeMiddyRequest } from "../src/middy-request.ts";

type Middy = typeof middyCurrent;
type Handler = (event: unknown, context: Context) => Promise<unknown>;

const versionOf = (name: string): string =>
	(
		JSON.parse(
			readFileSync(new URL(`../../../node_modules/${name}/package.json`, import.meta.url), "utf8"),
		) as { version: string }
	).version;

const floorVersion = versionOf("@middy/core-floor");
const currentVersion = versionOf("@middy/core");

const versions: ReadonlyArray<readonly [string, Middy]> = [
	[`${floorVersion} (floor)`, middyFloor as unknown as Middy],
	[`${currentVersion} (current)`, middyCurrent],
];

/** A Lambda context with `ms` left on its clock (Middy's early timeout reads it). */
const lambdaContext = (ms = 10_000): Context => {
	const deadline = Date.now() + ms;
	return { getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()) } as Context;
};

const label = (value: unknown): string => (value instanceof Error ? value.message : String(value));

/**
 * The first middleware of every chain: starts observing the request and logs what the observer is told, with
 * the value it is told about. `teardown` is what an early response hands Middy to wait for.
 */
const observed = (
	log: string[],
	seen: unknown[] = [],
	teardown?: () => Promise<void>,
	replace: (next: unknown) => unknown = (next) => next,
): MiddlewareObj => ({
	before: (request) => {
		const observer: MiddyRequestObserver = {
			errorPhase: (error) => {
				seen.push(error);
				log.push(`errorPhase:${label(error)}`);
			},
			rethrow: (error) => {
				seen.push(error);
				log.push(`rethrow:${label(error)}`);
			},
			earlyResponse: () => {
				log.push("earlyResponse");
				return teardown?.();
			},
			responseReplaced: replace,
		};
		observeMiddyRequest(request, observer);
	},
});

const boom = (): never => {
	throw new Error("boom");
};

/** Waits for the invocation; logs "settled" when its promise settles, and says how. */
const settle = (log: string[], promise: Promise<unknown>) =>
	promise.then(
		(value: unknown) => {
			log.push("settled");
			return { value };
		},
		(error: unknown) => {
			log.push("settled");
			return { error };
		},
	);

describe("the versions under test", () => {
	it("are the floor of the peer range ^7.8.0 and the current release", () => {
		expect(floorVersion).toBe("7.8.0");
		expect(currentVersion).toMatch(/^7\./);
		expect(currentVersion).not.toBe(floorVersion);
	});
});

describe.each(versions)("@middy/core %s", (_version, middy) => {
	describe("1. an early response is `request.response = request.earlyResponse`, then `return request.response`", () => {
		const slowTeardown = (log: string[]) => async () => {
			await sleep(10);
			log.push("teardown done");
		};

		it.each<[string, (first: MiddlewareObj) => Handler, { value: unknown }]>([
			[
				"a before returns a value",
				(first) =>
					middy(async () => "handler")
						.use(first)
						.use({ before: () => ({ statusCode: 304 }) }),
				{ value: { statusCode: 304 } },
			],
			[
				"a before sets request.earlyResponse to undefined",
				(first) =>
					middy(async () => "handler")
						.use(first)
						.use({
							before: (request) => {
								request.earlyResponse = undefined;
							},
						}),
				{ value: undefined },
			],
			[
				"an after returns a value",
				(first) =>
					middy(async () => "handler")
						.use(first)
						.use({ after: () => "from an after" }),
				{ value: "from an after" },
			],
			[
				"an onError returns a value",
				(first) =>
					middy(async () => boom())
						.use(first)
						.use({ onError: () => ({ statusCode: 500 }) }),
				{ value: { statusCode: 500 } },
			],
		])(
			"is seen when %s; the invocation returns it only after the teardown it was handed",
			async (_case, build, outcome) => {
				const log: string[] = [];
				const handler = build(observed(log, [], slowTeardown(log)));
				expect(await settle(log, handler({}, lambdaContext()))).toEqual(outcome);
				expect(log.filter((entry) => !entry.startsWith("errorPhase"))).toEqual([
					"earlyResponse",
					"teardown done",
					"settled",
				]);
			},
		);

		it("keeps Middy's rethrow when an onError answers early with undefined (after the teardown)", async () => {
			const log: string[] = [];
			const handler = middy(async () => boom())
				.use(observed(log, [], slowTeardown(log)))
				.use({
					onError: (request) => {
						request.earlyResponse = undefined;
					},
				});
			const result = await settle(log, handler({}, lambdaContext()));
			expect(result).toEqual({ error: expect.objectContaining({ message: "boom" }) });
			expect(log).toEqual(["errorPhase:boom", "earlyResponse", "teardown done", "settled"]);
		});

		it("is not taken for any other assignment of request.response, and Middy returns what request.response then reads", async () => {
			const log: string[] = [];
			const replace = (next: unknown) => {
				log.push(`responseReplaced:${String(next)}`);
				return `[${String(next)}]`;
			};
			const handler = middy(async () => "handler")
				.use(observed(log, [], undefined, replace))
				.use({
					after: (request) => {
						request.response = `${request.response} changed`;
					},
				});
			expect(await handler({}, lambdaContext())).toBe("[[handler] changed]");
			expect(log).toEqual(["responseReplaced:handler", "responseReplaced:[handler] changed"]);
		});

		it("is not seen for the handler's own response, nor for an after that changes request.response", async () => {
			const log: string[] = [];
			const handler = middy(async () => "handler")
				.use(observed(log))
				.use({
					after: (request) => {
						request.response = `${request.response} changed`;
					},
				});
			expect(await handler({}, lambdaContext())).toBe("handler changed");
			expect(log).toEqual([]);
		});
	});

	describe("2. the error phase begins with the first assignment of request.error, before any onError runs", () => {
		it.each<[string, (first: MiddlewareObj[]) => Handler]>([
			["the handler's promise rejects", (first) => middy(async () => boom()).use(first)],
			["the handler throws synchronously", (first) => middy(() => boom()).use(first)],
			[
				"a before throws",
				(first) =>
					middy(async () => "handler")
						.use(first)
						.use({ before: boom }),
			],
			[
				"an after throws",
				(first) =>
					middy(async () => "handler")
						.use(first)
						.use({ after: boom }),
			],
		])("when %s", async (_case, build) => {
			const log: string[] = [];
			const seen: unknown[] = [];
			const handler = build([
				observed(log, seen),
				{ onError: () => void log.push("onError (runs last)") },
				{ onError: () => void log.push("onError (runs first)") },
			]);
			const result = await settle(log, handler({}, lambdaContext()));
			expect(log).toEqual(["errorPhase:boom", "onError (runs first)", "onError (runs last)", "settled"]);
			expect(result).toEqual({ error: seen[0] });
		});

		it("does not begin on success", async () => {
			const log: string[] = [];
			const handler = middy(async () => "ok").use(observed(log));
			expect(await handler({}, lambdaContext())).toBe("ok");
			expect(log).toEqual([]);
		});
	});

	// (Before 7.8.0 the string and null cases failed: see the top of this file.)
	describe("3. an onError that throws: Middy assigns the thrown value to request.error and rethrows at once", () => {
		const thrownObject = new Error("onError failed");
		it.each<[string, (request: Request) => unknown, string]>([
			["throws a new error", () => thrownObject, "onError failed"],
			["rethrows request.error", (request) => request.error, "boom"],
			["throws a string", () => "a string", "a string"],
			["throws null", () => null, "null"],
		])(
			"%s: seen before Middy rethrows it, the onErrors left are skipped, the thrown value propagates",
			async (_case, toThrow, thrownLabel) => {
				const log: string[] = [];
				const seen: unknown[] = [];
				let thrown: unknown;
				const handler = middy(async () => boom())
					.use(observed(log, seen))
					.use({ onError: () => void log.push("onError (skipped)") })
					.use({
						onError: (request) => {
							thrown = toThrow(request);
							throw thrown;
						},
					});
				const result = await settle(log, handler({}, lambdaContext()));
				expect(log).toEqual(["errorPhase:boom", `rethrow:${thrownLabel}`, "settled"]);
				expect(seen[1]).toBe(thrown);
				expect(result).toEqual({ error: thrown });
			},
		);

		it("sets originalError on a new error thrown by an onError to the error before it", async () => {
			const seen: unknown[] = [];
			const handler = middy(async () => boom())
				.use(observed([], seen))
				.use({
					onError: () => {
						throw new Error("onError failed");
					},
				});
			const result = await settle([], handler({}, lambdaContext()));
			const [original, rethrown] = seen;
			expect(result).toEqual({ error: rethrown });
			expect((rethrown as { originalError?: unknown }).originalError).toBe(original);
		});

		it("is not confused with an onError that maps request.error to another error (the chain goes on)", async () => {
			const log: string[] = [];
			const handler = middy(async () => boom())
				.use(observed(log))
				.use({ onError: (request) => void log.push(`onError (next) sees ${label(request.error)}`) })
				.use({
					onError: (request) => {
						request.error = new Error("mapped", { cause: request.error });
					},
				});
			const result = await settle(log, handler({}, lambdaContext()));
			expect(log).toEqual(["errorPhase:boom", "onError (next) sees mapped", "settled"]);
			expect(result).toEqual({ error: expect.objectContaining({ message: "mapped" }) });
		});
	});

	describe("4. Middy's early timeout", () => {
		it("raises a TimeoutError that isMiddyTimeout recognises, into the error phase before any onError", async () => {
			const log: string[] = [];
			const seen: unknown[] = [];
			let signal: AbortSignal | undefined;
			const handler = middy(
				(_event: unknown, _context: Context, options: { signal: AbortSignal }) => {
					signal = options.signal;
					return new Promise<never>(() => {});
				},
				{ timeoutEarlyInMillis: 50 },
			)
				.use(observed(log, seen))
				.use({ onError: () => void log.push("onError") });
			const result = await settle(log, handler({}, lambdaContext(100)));
			expect(log).toEqual(["errorPhase:[AbortError]: The operation was aborted.", "onError", "settled"]);
			expect(isMiddyTimeout(seen[0])).toBe(true);
			expect(seen[0]).toMatchObject({ name: "TimeoutError", cause: { package: "@middy/core" } });
			expect(result).toEqual({ error: seen[0] });
			expect(signal?.aborted).toBe(true);
		});

		it("with a timeoutEarlyResponse that returns a value: no error, the afters run as on success while the handler still runs", async () => {
			const log: string[] = [];
			let handlerDone = false;
			const handler = middy(
				async () => {
					await sleep(1_000);
					handlerDone = true;
					return "late";
				},
				{ timeoutEarlyInMillis: 50, timeoutEarlyResponse: () => ({ statusCode: 503 }) },
			)
				.use(observed(log))
				.use({ after: (request) => void log.push(`after sees ${JSON.stringify(request.response)}`) });
			expect(await handler({}, lambdaContext(100))).toEqual({ statusCode: 503 });
			expect(handlerDone).toBe(false);
			expect(log).toEqual(['after sees {"statusCode":503}']);
		});
	});
});

describe("isMiddyTimeout", () => {
	it.each<[string, unknown]>([
		[
			"an Error named TimeoutError of another package",
			Object.assign(new Error("x"), { name: "TimeoutError" }),
		],
		["AbortSignal.timeout's reason", new DOMException("The operation timed out.", "TimeoutError")],
		["a plain object shaped like Middy's error", { name: "TimeoutError", cause: { package: "@middy/core" } }],
		["undefined", undefined],
		["a string", "TimeoutError"],
	])("is false for %s", (_case, value) => {
		expect(isMiddyTimeout(value)).toBe(false);
	});
});
