import middy from "@middy/core";
import { useHttpServer, usePoolCleanup } from "@middy-conn/test-harness/test-fixtures";
import type { Pool } from "undici";
import { describe, expect, it, vi } from "vitest";
import { closeHttpPools, errorCodes, type HttpPoolStats, httpPool } from "../src/index.ts";
import { type HttpContext, lambdaContext } from "./helpers.ts";

const server = useHttpServer();
usePoolCleanup(closeHttpPools);

describe("Middy's early timeout (timeoutEarlyInMillis)", () => {
	it("aborts the request the handler is still waiting on, and frees its socket", async () => {
		const stats: HttpPoolStats[] = [];
		const middleware = httpPool({
			origin: server.origin,
			connections: 1,
			logger: false,
			onStats: (s) => void stats.push(s),
		});
		let handlerRequest: Promise<unknown> | undefined;
		const handler = middy({ timeoutEarlyInMillis: 100 })
			.use(middleware)
			.handler(async (_event, context) => {
				handlerRequest = context.http.request({ path: "/hang", method: "GET" });
				return handlerRequest;
			});

		// Middy throws its TimeoutError into onError while the handler is still waiting for /hang.
		await expect(handler({}, lambdaContext(300))).rejects.toMatchObject({ name: "TimeoutError" });

		await expect(handlerRequest).rejects.toMatchObject({ code: errorCodes.invocationEnded, end: "timeout" });
		expect(stats[0]?.leftovers.aborted).toBe(1);
		// The socket is closed (undici counts it free once the close event has run).
		await vi.waitFor(() => expect(server.stats.open).toBe(0));
		await vi.waitFor(() => expect((middleware.dispatcher as Pool).stats.running).toBe(0));
	});

	it("leaves the pool of one usable by the next invocation", async () => {
		const middleware = httpPool({ origin: server.origin, connections: 1, logger: false });
		const handler = middy<{ path: string }>({ timeoutEarlyInMillis: 100 })
			.use(middleware)
			.handler(async (event, context) => {
				const { body } = await context.http.request({ path: event.path, method: "GET" });
				return body.json();
			});

		await expect(handler({ path: "/hang" }, lambdaContext(300))).rejects.toMatchObject({
			name: "TimeoutError",
		});
		expect(await handler({ path: "/json" }, lambdaContext(5_000))).toMatchObject({ ok: true });
	});

	it("refuses the requests a timed-out handler goes on to send", async () => {
		let later: Promise<unknown> | undefined;
		const handler = middy({ timeoutEarlyInMillis: 100 })
			.use(httpPool({ origin: server.origin, logger: false }))
			.handler(async (_event, context: HttpContext) => {
				await new Promise((resolve) => setTimeout(resolve, 400));
				later = context.http.request({ path: "/json", method: "GET" });
				return later;
			});

		await expect(handler({}, lambdaContext(300))).rejects.toMatchObject({ name: "TimeoutError" });
		await vi.waitFor(() => expect(later).toBeDefined());

		await expect(later).rejects.toMatchObject({ code: errorCodes.invocationEnded });
		expect(server.receivedCount("GET", "/json")).toBe(0);
	});

	it("does not wait for background tasks then: their requests are aborted at once", async () => {
		const stats: HttpPoolStats[] = [];
		let background: Promise<unknown> | undefined;
		const handler = middy({ timeoutEarlyInMillis: 100 })
			.use(httpPool({ origin: server.origin, logger: false, onStats: (s) => void stats.push(s) }))
			.handler(async (_event, context) => {
				background = context.http.request({ path: "/hang", method: "POST", body: "audit" });
				context.waitUntil(background);
				return new Promise(() => {});
			});

		await expect(handler({}, lambdaContext(300))).rejects.toMatchObject({ name: "TimeoutError" });

		await expect(background).rejects.toMatchObject({ code: errorCodes.invocationEnded });
		expect(stats[0]?.background).toEqual({ finished: 0, failed: 0, aborted: 1 });
	});
});
