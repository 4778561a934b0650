import middy from "@middy/core";
import type { Context } from "aws-lambda";
import { describe, expect, it } from "vitest";
import { type InvocationEnd, invocationEndFromError, invocationScope } from "../src/index.ts";

const context = {} as Context;

// A middleware shaped like ours: opens in before, closes in after/onError, and records what happened.
const resourceMiddleware = (log: string[], name = "res") => ({
	before: (request: middy.Request) => {
		const scope = invocationScope(request);
		const close = scope.add({
			name,
			close: async (end: InvocationEnd) => {
				await new Promise((resolve) => setTimeout(resolve, 5));
				log.push(`${name}:close:${end.kind}`);
			},
			destroy: () => log.push(`${name}:destroy`),
		});
		(request.internal as Record<string, unknown>)[name] = close;
		log.push(`${name}:open`);
	},
	after: async (request: middy.Request) => {
		await ((request.internal as Record<string, unknown>)[name] as (e: InvocationEnd) => Promise<void>)({
			kind: "success",
		});
	},
	onError: async (request: middy.Request) => {
		await ((request.internal as Record<string, unknown>)[name] as (e: InvocationEnd) => Promise<void>)(
			invocationEndFromError(request.error),
		);
	},
});

describe("invocation scope", () => {
	it("closes in the middleware's own after on success, once", async () => {
		const log: string[] = [];
		const handler = middy(async () => "ok").use(resourceMiddleware(log));
		expect(await handler({}, context)).toBe("ok");
		expect(log).toEqual(["res:open", "res:close:success"]);
	});

	it("closes before the invocation returns when a later before returns early (Middy skips every after)", async () => {
		const log: string[] = [];
		const handler = middy(async () => "handler")
			.use(resourceMiddleware(log, "a"))
			.use(resourceMiddleware(log, "b"))
			.use({ before: () => ({ statusCode: 304 }) });
		const response = await handler({}, context);
		// the cleanup finished before the response was handed back, newest resource first
		expect(log).toEqual(["a:open", "b:open", "b:close:early-response", "a:close:early-response"]);
		expect(response).toEqual({ statusCode: 304 });
	});

	it("closes when an after further out returns early and skips ours", async () => {
		const log: string[] = [];
		const handler = middy(async () => "handler")
			.use({ after: () => "replaced" })
			.use(resourceMiddleware(log))
			.use({ after: () => "early" });
		expect(await handler({}, context)).toBe("early");
		expect(log).toEqual(["res:open", "res:close:early-response"]);
	});

	it("closes once when an after throws and onError runs as well", async () => {
		const log: string[] = [];
		const handler = middy(async () => "handler")
			.use({ onError: (request) => ({ statusCode: 500, body: String(request.error) }) })
			.use(resourceMiddleware(log))
			.use({
				after: () => {
					throw new Error("after failed");
				},
			});
		expect(await handler({}, context)).toMatchObject({ statusCode: 500 });
		expect(log).toEqual(["res:open", "res:close:error"]);
	});

	it("closes when an onError that runs first returns a response and skips ours", async () => {
		const log: string[] = [];
		const handler = middy(async () => {
			throw new Error("boom");
		})
			.use(resourceMiddleware(log))
			.use({ onError: () => ({ statusCode: 500 }) });
		expect(await handler({}, context)).toEqual({ statusCode: 500 });
		expect(log).toEqual(["res:open", "res:close:error"]);
	});

	it("keeps Middy's rethrow when an onError returns early with undefined", async () => {
		const log: string[] = [];
		const handler = middy(async () => {
			throw new Error("boom");
		})
			.use(resourceMiddleware(log))
			.use({
				onError: (request) => {
					(request as { earlyResponse?: unknown }).earlyResponse = undefined;
				},
			});
		await expect(handler({}, context)).rejects.toThrow("boom");
		expect(log).toEqual(["res:open", "res:close:error"]);
	});

	it("destroys synchronously when an onError throws before ours could run", async () => {
		const log: string[] = [];
		const handler = middy(async () => {
			throw new Error("boom");
		})
			.use(resourceMiddleware(log))
			.use({
				onError: () => {
					throw new Error("error handler failed");
				},
			});
		const result = handler({}, context);
		await expect(result).rejects.toThrow("error handler failed");
		expect(log).toEqual(["res:open", "res:destroy"]);
	});

	it("destroys synchronously when an onError rethrows the same error", async () => {
		const log: string[] = [];
		const handler = middy(async () => {
			throw new Error("boom");
		})
			.use(resourceMiddleware(log))
			.use({
				onError: (request) => {
					throw request.error;
				},
			});
		await expect(handler({}, context)).rejects.toThrow("boom");
		expect(log).toEqual(["res:open", "res:destroy"]);
	});

	it("still closes gracefully when an earlier onError replaces request.error with its own (and the chain goes on)", async () => {
		const log: string[] = [];
		const handler = middy(async () => {
			throw new Error("boom");
		})
			.use(resourceMiddleware(log))
			.use({
				onError: (request) => {
					request.error = new Error("mapped", { cause: request.error });
				},
			});
		await expect(handler({}, context)).rejects.toThrow("mapped");
		expect(log).toEqual(["res:open", "res:close:error"]);
	});

	it("destroys synchronously when the scope is first used in onError and a later onError throws", async () => {
		const log: string[] = [];
		const handler = middy(async () => {
			throw new Error("boom");
		})
			.use({
				onError: () => {
					throw new Error("error handler failed");
				},
			})
			.use({
				onError: (request) => {
					invocationScope(request).add({
						name: "late",
						close: () => {
							log.push("late:close");
						},
						destroy: () => log.push("late:destroy"),
					});
				},
			});
		await expect(handler({}, context)).rejects.toThrow("error handler failed");
		expect(log).toEqual(["late:destroy"]);
	});

	it("classifies Middy's early timeout as a timeout", async () => {
		const log: string[] = [];
		const handler = middy(async () => new Promise((resolve) => setTimeout(resolve, 1000)), {
			timeoutEarlyInMillis: 5,
		})
			.use(resourceMiddleware(log))
			.use({ onError: () => ({ statusCode: 504 }) });
		const lambdaContext = { getRemainingTimeInMillis: () => 30 } as Context;
		expect(await handler({}, lambdaContext)).toEqual({ statusCode: 504 });
		expect(log).toEqual(["res:open", "res:close:timeout"]);
		expect(
			invocationEndFromError(
				Object.assign(new Error("x"), { name: "TimeoutError", cause: { package: "@middy/core" } }),
			).kind,
		).toBe("timeout");
	});

	it("gives concurrent invocations separate scopes", async () => {
		const scopes = new Set<unknown>();
		const handler = middy(async () => new Promise((resolve) => setTimeout(resolve, 10))).use({
			before: (request) => {
				scopes.add(invocationScope(request));
				expect(invocationScope(request)).toBe(invocationScope(request));
			},
		});
		await Promise.all(Array.from({ length: 5 }, () => handler({}, context)));
		expect(scopes.size).toBe(5);
	});
});
