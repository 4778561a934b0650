import { setImmediate } from "node:timers/promises";
import middy from "@middy/core";
import { useHttpServer, usePoolCleanup } from "@middy-conn/test-harness/test-fixtures";
import { describe, expect, it, vi } from "vitest";
import {
	closeHttpPools,
	errorCodes,
	type HttpPoolOptions,
	type HttpPoolStats,
	httpPool,
} from "../src/index.ts";
import {
	auditRoute,
	type HttpContext,
	lambdaContext,
	spyLogger,
	watchUnhandledRejections,
} from "./helpers.ts";

const server = useHttpServer({ routes: auditRoute() });
usePoolCleanup(closeHttpPools);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Sends `count` audit POSTs in the background, the way the contract does. */
const auditInBackground = (context: HttpContext, count: number) => {
	for (let i = 0; i < count; i++) {
		context.waitUntil(
			context.http
				.request({ path: "/audit", method: "POST", body: JSON.stringify({ i }) })
				.then(({ body }) => body.dump()),
		);
	}
};

const withStats = (options: HttpPoolOptions = {}) => {
	const stats: HttpPoolStats[] = [];
	const logger = spyLogger();
	const middleware = httpPool({
		origin: server.origin,
		logger,
		onStats: (s) => void stats.push(s),
		...options,
	});
	return { middleware, stats, logger };
};

describe("context.waitUntil: background work that is delivered before the invocation returns", () => {
	it("has all 50 background POSTs received by the server before the handler's promise resolves", async () => {
		const { middleware, stats } = withStats();
		const handler = middy(async (_event: unknown, context: HttpContext) => {
			auditInBackground(context, 50);
			return { statusCode: 202 };
		}).use(middleware);

		const response = await handler({}, lambdaContext(10_000));

		expect(response).toEqual({ statusCode: 202 });
		expect(server.receivedCount("POST", "/audit")).toBe(50);
		expect(stats[0]?.background).toEqual({ finished: 50, failed: 0, aborted: 0 });
	});

	it("delivers them on the error path too, and the error stays the invocation's outcome", async () => {
		const { middleware, stats } = withStats();
		const handler = middy(async (_event: unknown, context: HttpContext) => {
			auditInBackground(context, 50);
			throw new Error("order 42 not found");
		}).use(middleware);

		await expect(handler({}, lambdaContext(10_000))).rejects.toThrow("order 42 not found");

		expect(server.receivedCount("POST", "/audit")).toBe(50);
		expect(stats[0]?.background.finished).toBe(50);
	});

	it("delivers them when a later middleware answers early and Middy skips every after", async () => {
		const { middleware, stats } = withStats();
		const handler = middy(async () => "handler never runs")
			.use(middleware)
			.use({
				before: (request) => {
					auditInBackground(request.context as HttpContext, 50);
					return { statusCode: 304 };
				},
			});

		expect(await handler({}, lambdaContext(10_000))).toEqual({ statusCode: 304 });

		expect(server.receivedCount("POST", "/audit")).toBe(50);
		expect(stats[0]?.background.finished).toBe(50);
	});

	it("aborts a hung background task at the deadline, reports it, and the invocation still returns", async () => {
		const { middleware, stats, logger } = withStats({ waitUntilReserve: 500 });
		let taskSignal: AbortSignal | undefined;
		let hungRequest: Promise<unknown> | undefined;
		const context = lambdaContext(1_000);
		const handler = middy(async (_event: unknown, context: HttpContext) => {
			// A task that ignores its signal, and an HTTP request that never gets an answer.
			context.waitUntil(function ignoresItsSignal(signal) {
				taskSignal = signal;
				return new Promise(() => {});
			});
			hungRequest = context.http.request({ path: "/hang", method: "POST", body: "x" });
			context.waitUntil(hungRequest);
			return "returned";
		}).use(middleware);

		expect(await handler({}, context)).toBe("returned");

		// It returned before the function's own deadline, with both tasks given up on and reported.
		expect(context.getRemainingTimeInMillis()).toBeGreaterThan(0);
		expect(stats[0]?.background).toEqual({ finished: 0, failed: 0, aborted: 2 });
		expect(taskSignal?.aborted).toBe(true);
		expect(logger.warn).toHaveBeenCalledWith(
			expect.stringMatching(/2 background task\(s\) aborted at the wait deadline/),
			expect.objectContaining({ tasks: ["ignoresItsSignal (#1)", "#2"] }),
		);
		// The hung request was aborted, and its socket closed, rather than frozen with the process.
		await expect(hungRequest).rejects.toMatchObject({ code: errorCodes.deadline });
		await vi.waitFor(() => expect(server.stats.open).toBe(0));
	});

	it("waits at most waitUntilTimeout when the context has no Lambda clock", async () => {
		const { middleware, stats } = withStats({ waitUntilTimeout: 50 });
		const handler = middy(async (_event: unknown, context: HttpContext) => {
			context.waitUntil(new Promise(() => {}));
			return "returned";
		}).use(middleware);

		expect(await handler({}, lambdaContext())).toBe("returned");
		expect(stats[0]?.background.aborted).toBe(1);
	});

	it("logs a failed task, keeps the success, and lets no rejection go unhandled", async () => {
		const unhandled = watchUnhandledRejections();
		try {
			const { middleware, stats, logger } = withStats();
			const failure = new Error("audit service down");
			const handler = middy(async (_event: unknown, context: HttpContext) => {
				context.waitUntil(Promise.reject(failure));
				context.waitUntil(async () => {
					throw failure;
				});
				context.waitUntil(() => {
					throw failure;
				});
				return { statusCode: 200 };
			}).use(middleware);

			expect(await handler({}, lambdaContext(10_000))).toEqual({ statusCode: 200 });
			await setImmediate();

			expect(stats[0]?.background).toEqual({ finished: 0, failed: 3, aborted: 0 });
			expect(logger.error).toHaveBeenCalledTimes(3);
			expect(logger.error).toHaveBeenCalledWith(
				expect.stringContaining("background task failed"),
				expect.objectContaining({ error: failure }),
			);
			expect(unhandled.seen).toEqual([]);
		} finally {
			unhandled.stop();
		}
	});

	it("never lets a task that settles after its invocation surface in a later one", async () => {
		const unhandled = watchUnhandledRejections();
		try {
			const { middleware, stats, logger } = withStats({ waitUntilReserve: 10_000 });
			let rejectedLate = false;
			const handler = middy(async (event: { late: boolean }, context: HttpContext) => {
				if (event.late) {
					context.waitUntil(
						sleep(50).then(() => {
							rejectedLate = true;
							throw new Error("too late");
						}),
					);
				}
				await sleep(event.late ? 0 : 100);
				return "ok";
			}).use(middleware);

			// No time left for background work (the reserve exceeds the remaining time): the task is given up on.
			expect(await handler({ late: true }, lambdaContext(5_000))).toBe("ok");
			expect(await handler({ late: false }, lambdaContext(60_000))).toBe("ok");

			expect(rejectedLate).toBe(true);
			expect(stats.map((s) => s.background)).toEqual([
				{ finished: 0, failed: 0, aborted: 1 },
				{ finished: 0, failed: 0, aborted: 0 },
			]);
			expect(logger.error).not.toHaveBeenCalled();
			expect(unhandled.seen).toEqual([]);
		} finally {
			unhandled.stop();
		}
	});

	it("works without origin, and for promises that are not HTTP requests", async () => {
		const { middleware, stats } = withStats({ origin: undefined });
		let written = false;
		const handler = middy(async (_event: unknown, context: HttpContext) => {
			context.waitUntil(sleep(30).then(() => (written = true)));
			context.waitUntil(async (signal) => {
				const { body } = await context.http.request({
					origin: server.origin,
					path: "/audit",
					method: "POST",
					signal,
				});
				await body.dump();
			});
			return "ok";
		}).use(middleware);

		expect(await handler({}, lambdaContext(10_000))).toBe("ok");
		expect(written).toBe(true);
		expect(server.receivedCount("POST", "/audit")).toBe(1);
		expect(stats[0]?.background.finished).toBe(2);
	});

	it("waits for tasks that tasks add", async () => {
		const { middleware, stats } = withStats();
		const handler = middy(async (_event: unknown, context: HttpContext) => {
			context.waitUntil(async () => {
				await sleep(10);
				auditInBackground(context, 3);
			});
			return "ok";
		}).use(middleware);

		await handler({}, lambdaContext(10_000));

		expect(server.receivedCount("POST", "/audit")).toBe(3);
		expect(stats[0]?.background.finished).toBe(4);
	});

	it("refuses a task registered after its invocation ended, with an error to the caller and in the log", async () => {
		const unhandled = watchUnhandledRejections();
		try {
			const { middleware, logger } = withStats();
			let waitUntil: HttpContext["waitUntil"] | undefined;
			const handler = middy(async (_event: unknown, context: HttpContext) => {
				waitUntil = context.waitUntil;
				return "ok";
			}).use(middleware);
			await handler({}, lambdaContext(10_000));

			const task = vi.fn(async () => {});
			expect(() => waitUntil?.(task)).toThrow(
				expect.objectContaining({ code: "MIDDY_CONN_INVOCATION_ENDED" }),
			);
			expect(() => waitUntil?.(Promise.reject(new Error("leaked")))).toThrow(/after the invocation ended/);
			await setImmediate();

			expect(task).not.toHaveBeenCalled();
			expect(logger.error).toHaveBeenCalledWith(
				expect.stringContaining("after the invocation ended"),
				expect.anything(),
			);
			expect(unhandled.seen).toEqual([]);
		} finally {
			unhandled.stop();
		}
	});

	it("rejects what is neither a promise nor a function", async () => {
		const handler = middy(async (_event: unknown, context: HttpContext) => {
			context.waitUntil("audit" as never);
		}).use(httpPool({ origin: server.origin, logger: false }));

		await expect(handler({}, lambdaContext())).rejects.toThrow(/expects a promise or a function/);
	});

	it("is one set of tasks per invocation, shared by two httpPool middlewares", async () => {
		const handler = middy(async (_event: unknown, context: HttpContext<"first" | "second">) => {
			const { first, second } = context;
			context.waitUntil(async () => {
				await sleep(20);
				// The inner middleware's after runs first: it must not have cleaned up its requests yet.
				for (const dispatcher of [first, second]) {
					const { body } = await dispatcher.request({ path: "/audit", method: "POST" });
					await body.dump();
				}
			});
			return "ok";
		})
			.use(httpPool({ origin: server.origin, contextKey: "first", logger: false }))
			.use(httpPool({ origin: server.origin, contextKey: "second", logger: false, connections: 2 }));

		expect(await handler({}, lambdaContext<HttpContext<"first" | "second">>(10_000))).toBe("ok");
		expect(server.receivedCount("POST", "/audit")).toBe(2);
	});
});
