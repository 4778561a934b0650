import middy from "@middy/core";
import { startHttpServer } from "@middy-conn/test-harness";
import { useHttpServer, usePoolCleanup } from "@middy-conn/test-harness/test-fixtures";
import { Agent, fetch, request } from "undici";
import { describe, expect, it } from "vitest";
import { closeHttpPools, errorCodes, type HttpPoolStats, httpPool } from "../src/index.ts";
import { asLambda, type HttpContext, lambdaContext } from "./helpers.ts";

const server = useHttpServer();
usePoolCleanup(closeHttpPools);

describe("a warm pool shared by the invocations of one execution environment", () => {
	it("serves 100 sequential warm invocations over one connection, and the stats say so", async () => {
		const stats: HttpPoolStats[] = [];
		const handler = asLambda(
			middy(async (_event: unknown, context: HttpContext) => {
				const { statusCode, body } = await context.http.request({ path: "/json", method: "GET" });
				await body.json();
				return statusCode;
			}).use(httpPool({ origin: server.origin, logger: false, onStats: (s) => void stats.push(s) })),
		);

		for (let i = 0; i < 100; i++) expect(await handler({}, lambdaContext())).toBe(200);

		expect(server.stats.connections).toBe(1);
		expect(new Set(server.received.map((received) => received.socketId)).size).toBe(1);
		expect(stats).toHaveLength(100);
		expect(stats.reduce((sum, s) => sum + s.connectionsOpened, 0)).toBe(1);
		expect(stats.reduce((sum, s) => sum + s.connectionsReused, 0)).toBe(99);
		expect(stats[0]).toMatchObject({ connectionsOpened: 1, connectionsReused: 0, requests: 1 });
		expect(stats[99]).toMatchObject({ connectionsOpened: 0, connectionsReused: 1, requests: 1 });
	});

	it("gives one dispatcher to equal options, even from two httpPool() calls", async () => {
		const first = httpPool({ origin: server.origin, connections: 3 });
		const second = httpPool({ connections: 3, origin: server.origin });
		const other = httpPool({ origin: server.origin, connections: 4 });
		expect(first.dispatcher).toBe(second.dispatcher);
		expect(other.dispatcher).not.toBe(first.dispatcher);
	});

	it("never opens more than `connections` sockets, however many invocations run at once", async () => {
		let busy = 0;
		let mostBusy = 0;
		server.route("/count", (_req, res) => {
			busy++;
			mostBusy = Math.max(mostBusy, busy);
			setTimeout(() => {
				busy--;
				res.end("{}");
			}, 20);
		});
		const handler = middy(async (_event: unknown, context: HttpContext) => {
			for (let i = 0; i < 3; i++) {
				const { body } = await context.http.request({ path: "/count", method: "GET" });
				await body.dump();
			}
			return "done";
		}).use(httpPool({ origin: server.origin, connections: 2, logger: false }));

		const results = await Promise.all(Array.from({ length: 20 }, () => handler({}, lambdaContext())));

		expect(results.every((result) => result === "done")).toBe(true);
		expect(server.receivedCount("GET", "/count")).toBe(60);
		expect(server.stats.connections).toBe(2);
		expect(mostBusy).toBe(2);
	});

	it("works with undici.request and fetch given context.http as their dispatcher", async () => {
		const handler = middy(async (_event: unknown, context: HttpContext) => {
			const viaRequest = await request(`${server.origin}/echo?via=request`, { dispatcher: context.http });
			const viaFetch = await fetch(`${server.origin}/echo?via=fetch`, {
				method: "POST",
				body: "hello",
				dispatcher: context.http,
			});
			return {
				request: ((await viaRequest.body.json()) as { path: string }).path,
				fetch: (await viaFetch.json()) as { method: string; body: string },
				requests: context.http.invocationStats.requests,
			};
		}).use(httpPool({ origin: server.origin, logger: false }));

		const result = await handler({}, lambdaContext());
		expect(result.request).toBe("/echo?via=request");
		expect(result.fetch).toMatchObject({ method: "POST", body: "hello" });
		expect(result.requests).toBe(2);
	});

	it("works with Node's own fetch too, whose handlers speak undici 7's API", async () => {
		const handler = middy(async (_event: unknown, context: HttpContext) => {
			const response = await globalThis.fetch(`${server.origin}/json`, {
				dispatcher: context.http,
			} as RequestInit);
			return response.json();
		}).use(httpPool({ origin: server.origin, logger: false }));

		expect(await handler({}, lambdaContext())).toMatchObject({ ok: true });
	});

	it("without origin, takes each request's origin and keeps one pool per origin", async () => {
		const second = await startHttpServer();
		try {
			const handler = middy(async (_event: unknown, context: HttpContext) => {
				for (const origin of [server.origin, second.origin, server.origin, second.origin]) {
					const { body } = await context.http.request({ origin, path: "/json", method: "GET" });
					await body.dump();
				}
				return context.http.invocationStats;
			}).use(httpPool({ logger: false }));

			const stats = await handler({}, lambdaContext());
			expect(stats).toMatchObject({ connectionsOpened: 2, connectionsReused: 2, requests: 4 });
			expect(server.stats.connections).toBe(1);
			expect(second.stats.connections).toBe(1);
			expect(httpPool({}).dispatcher).toBeInstanceOf(Agent);
		} finally {
			await second.close();
		}
	});

	it("refuses a request for another origin than the configured one, and one with no origin at all", async () => {
		const handler = middy(async (_event: unknown, context: HttpContext) => {
			const errors = [];
			for (const origin of ["http://example.invalid", undefined]) {
				errors.push(
					await context.http.request({ ...(origin ? { origin } : {}), path: "/json", method: "GET" }).then(
						() => undefined,
						(error: { code?: string }) => error.code,
					),
				);
			}
			return errors;
		});

		expect(
			await handler.use(httpPool({ origin: server.origin, logger: false }))({}, lambdaContext()),
		).toEqual([errorCodes.originMismatch, undefined]);
		const withoutOrigin = middy(async (_event: unknown, context: HttpContext) =>
			context.http.request({ path: "/json", method: "GET" }).catch((error: { code?: string }) => error.code),
		).use(httpPool({ logger: false }));
		expect(await withoutOrigin({}, lambdaContext())).toBe(errorCodes.originRequired);
	});

	it("puts the dispatcher under contextKey, and keeps waitUntil on the context", async () => {
		const handler = middy(async (_event: unknown, context: HttpContext<"api">) => {
			const { body } = await context.api.request({ path: "/json", method: "GET" });
			return { body: await body.json(), waitUntil: typeof context.waitUntil };
		}).use(httpPool({ origin: server.origin, contextKey: "api", logger: false }));

		expect(await handler({}, lambdaContext<HttpContext<"api">>())).toEqual({
			body: { ok: true, socketId: expect.any(Number) },
			waitUntil: "function",
		});
	});

	it("leaves the shared pool open when a handler closes or destroys context.http", async () => {
		const handler = asLambda(
			middy(async (_event: unknown, context: HttpContext) => {
				const { body } = await context.http.request({ path: "/json", method: "GET" });
				await body.dump();
				await context.http.close();
				await context.http.destroy();
				return "closed";
			}).use(httpPool({ origin: server.origin, logger: false })),
		);

		expect(await handler({}, lambdaContext())).toBe("closed");
		expect(await handler({}, lambdaContext())).toBe("closed");
		expect(server.stats.connections).toBe(1);
	});

	it("refuses requests from a promise that outlived its invocation", async () => {
		let leaked: unknown;
		const handler = middy(async (_event: unknown, context: HttpContext) => {
			leaked = context.http;
			return "ok";
		}).use(httpPool({ origin: server.origin, logger: false }));
		await handler({}, lambdaContext());

		const dispatcher = leaked as { request: (o: object) => Promise<unknown> };
		await expect(dispatcher.request({ path: "/json", method: "GET" })).rejects.toMatchObject({
			code: errorCodes.invocationEnded,
		});
		expect(server.receivedCount()).toBe(0);
	});
});
