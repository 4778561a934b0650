import middy from "@middy/core";
import { useHttpServer, usePoolCleanup } from "@middy-conn/test-harness/test-fixtures";
import { describe, expect, it } from "vitest";
import { closeHttpPools, type HttpPoolStats, httpPool } from "../src/index.ts";
import { type HttpContext, lambdaContext, spyLogger } from "./helpers.ts";

const server = useHttpServer({
	routes: {
		"/slowish": (_req, res) => {
			setTimeout(() => res.end("{}"), 10);
		},
	},
});
usePoolCleanup(closeHttpPools);

describe("per-invocation stats", () => {
	it("attributes requests to their own invocation when invocations run concurrently in one process", async () => {
		const stats = new Map<number, HttpPoolStats>();
		const handler = middy(async (event: { id: number; requests: number }, context: HttpContext) => {
			for (let i = 0; i < event.requests; i++) {
				const { body } = await context.http.request({ path: "/slowish", method: "GET" });
				await body.dump();
			}
			return context.http.invocationStats;
		}).use(
			httpPool({
				origin: server.origin,
				connections: 3,
				logger: false,
				onStats: (s, request) => void stats.set((request.event as { id: number }).id, s),
			}),
		);

		const events = Array.from({ length: 8 }, (_, id) => ({ id, requests: id + 1 }));
		const seenInHandler = await Promise.all(events.map((event) => handler(event, lambdaContext())));

		for (const event of events) {
			expect(stats.get(event.id)?.requests).toBe(event.requests);
			expect(seenInHandler[event.id]?.requests).toBe(event.requests);
		}
		const all = [...stats.values()];
		expect(all.reduce((sum, s) => sum + s.connectionsOpened, 0)).toBe(server.stats.connections);
		expect(all.reduce((sum, s) => sum + s.connectionsOpened + s.connectionsReused, 0)).toBe(36);
	});

	it("logs one structured line per invocation with logStats", async () => {
		const logger = spyLogger();
		const handler = middy(async (_event: unknown, context: HttpContext) => {
			const { body } = await context.http.request({ path: "/json", method: "GET" });
			await body.dump();
			context.waitUntil(Promise.resolve());
			return "ok";
		}).use(httpPool({ origin: server.origin, logger, logStats: true }));

		await handler({}, lambdaContext());

		expect(logger.info).toHaveBeenCalledTimes(1);
		expect(logger.info).toHaveBeenCalledWith("@middy-conn/http-pool: invocation stats", {
			contextKey: "http",
			origin: server.origin,
			connectionsOpened: 1,
			connectionsReused: 0,
			requests: 1,
			leftovers: { dumped: 0, aborted: 0 },
			background: { finished: 1, failed: 0, aborted: 0 },
		});
	});

	it("keeps the invocation's outcome when onStats throws, and reports it", async () => {
		const logger = spyLogger();
		const handler = middy(async () => "ok").use(
			httpPool({
				origin: server.origin,
				logger,
				onStats: () => {
					throw new Error("metrics backend down");
				},
			}),
		);

		expect(await handler({}, lambdaContext())).toBe("ok");
		expect(logger.warn).toHaveBeenCalledWith(expect.stringContaining("onStats threw"), expect.anything());
	});

	it("logs nothing with logger: false", async () => {
		const calls: unknown[] = [];
		const original = { ...console };
		for (const level of ["info", "warn", "error"] as const)
			console[level] = (...args: unknown[]) => void calls.push(args);
		try {
			const handler = middy(async (_event: unknown, context: HttpContext) => {
				context.waitUntil(Promise.reject(new Error("ignored")));
				return "ok";
			}).use(httpPool({ origin: server.origin, logger: false, logStats: true }));
			expect(await handler({}, lambdaContext())).toBe("ok");
		} finally {
			Object.assign(console, original);
		}
		expect(calls).toEqual([]);
	});
});
