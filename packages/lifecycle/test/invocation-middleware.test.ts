// invocationMiddleware (src/invocation-middleware.ts): the before/after/onError that @middy-conn/mysql and
// @middy-conn/http-pool share. Real @middy/core; the resource is a fake that records how it was closed.
import middy from "@middy/core";
import { createLambdaContext } from "@middy-conn/test-harness";
import { recordingLogger } from "@middy-conn/test-harness/test-fixtures";
import { describe, expect, it } from "vitest";
import type { InvocationEnd, InvocationResource } from "../src/index.ts";
import { invocationMiddleware } from "../src/internal.ts";

/** A resource that records its close, and fails it when told to. */
const fakeResource = (closeFails?: Error) => {
	const ends: InvocationEnd[] = [];
	const resource: InvocationResource = {
		name: "fake",
		busy: () => false,
		interrupt() {},
		close(end) {
			ends.push(end);
			if (closeFails) return Promise.reject(closeFails);
		},
		destroy() {},
	};
	return { resource, ends };
};

const setup = (options: { closeFails?: Error; contextKey?: string } = {}) => {
	const { lines, logger } = recordingLogger();
	const { resource, ends } = fakeResource(options.closeFails);
	const hooks = invocationMiddleware({
		pkg: "@middy-conn/fake",
		name: "fakePool",
		contextKey: options.contextKey ?? "fake",
		invocationOptions: { logger, waitUntilTimeout: 1000, waitUntilReserve: 0 },
		reportsStats: false,
		open: () => ({ resource, value: { the: "value" } }),
	});
	return { hooks, lines, ends };
};

describe("invocationMiddleware", () => {
	it("names its hooks after the middleware, as Middy's profiling plugins show them", () => {
		const { hooks } = setup();
		expect([hooks.before.name, hooks.after.name, hooks.onError.name]).toEqual([
			"fakePoolMiddlewareBefore",
			"fakePoolMiddlewareAfter",
			"fakePoolMiddlewareOnError",
		]);
	});

	it("puts the opened value at context[contextKey] with waitUntil, and closes the resource after a success", async () => {
		const { hooks, ends } = setup({ contextKey: "api" });
		const seen: unknown[] = [];
		const handler = middy()
			.use(hooks)
			.handler(async (_event: unknown, context) => {
				const { api, waitUntil } = context as unknown as Record<string, unknown>;
				seen.push(api, typeof waitUntil);
				return "done";
			});
		expect(await handler({}, createLambdaContext())).toBe("done");
		expect(seen).toEqual([{ the: "value" }, "function"]);
		expect(ends).toMatchObject([{ kind: "success" }]);
	});

	it("two instances side by side keep their own resource (one slot each)", async () => {
		const first = setup({ contextKey: "one" });
		const second = setup({ contextKey: "two" });
		const handler = middy()
			.use(first.hooks)
			.use(second.hooks)
			.handler(async () => "done");
		await handler({}, createLambdaContext());
		expect([first.ends.length, second.ends.length]).toEqual([1, 1]);
	});

	it("onError: a failed close is logged as '<pkg>: cleanup failed' with the error, and the handler's error stays", async () => {
		const closeError = new Error("close failed");
		const { hooks, lines, ends } = setup({ closeFails: closeError });
		const handlerError = new Error("the handler's own");
		const handler = middy()
			.use(hooks)
			.handler(async () => {
				throw handlerError;
			});
		await expect(handler({}, createLambdaContext())).rejects.toBe(handlerError);
		expect(ends).toMatchObject([{ kind: "error" }]);
		expect(lines).toContainEqual(
			expect.objectContaining({
				level: "warn",
				message: "@middy-conn/fake: cleanup failed",
				extra: [{ error: closeError }],
			}),
		);
	});

	it("after and onError return nothing when the request never went through before", () => {
		const { hooks } = setup();
		const request = {
			event: {},
			context: createLambdaContext(),
			response: undefined,
			error: undefined,
			internal: {},
		};
		expect(hooks.after(request as never)).toBeUndefined();
		expect(hooks.onError(request as never)).toBeUndefined();
	});
});
