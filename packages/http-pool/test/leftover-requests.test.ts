import middy from "@middy/core";
import { useHttpServer, usePoolCleanup } from "@middy-conn/test-harness/test-fixtures";
import { describe, expect, it, vi } from "vitest";
import { closeHttpPools, errorCodes, type HttpPoolStats, httpPool } from "../src/index.ts";
import { type HttpContext, lambdaContext, spyLogger } from "./helpers.ts";

const server = useHttpServer();
usePoolCleanup(closeHttpPools);

/** A pool of one connection: whatever an invocation leaves holding it would stall the next one. */
const poolOfOne = (stats: HttpPoolStats[], logger = spyLogger()) =>
	httpPool({ origin: server.origin, connections: 1, logger, onStats: (s) => void stats.push(s) });

/** Two functions, each on a pool of one (the same warm pool): one leaves a body of `bytes` unread, one reads JSON. */
const unreadThenRead = (bytes: number, stats: HttpPoolStats[]) => ({
	leaveUnread: middy(async (_event: unknown, context: HttpContext) => {
		const { statusCode } = await context.http.request({ path: `/large?bytes=${bytes}`, method: "GET" });
		return statusCode;
	}).use(poolOfOne(stats)),
	readJson: middy(async (_event: unknown, context: HttpContext) => {
		const { body } = await context.http.request({ path: "/json", method: "GET" });
		return body.json();
	}).use(poolOfOne(stats)),
});

describe("what an invocation leaves open when it ends", () => {
	it("dumps bodies the handler left unread, so a pool of one is not starved", async () => {
		const stats: HttpPoolStats[] = [];
		// 100 kB: more than undici buffers for an unread body (64 KiB), so the connection stays busy until it is read.
		const { leaveUnread, readJson } = unreadThenRead(100_000, stats);

		expect(await leaveUnread({}, lambdaContext())).toBe(200);
		expect(await readJson({}, lambdaContext())).toMatchObject({ ok: true });
		expect(await leaveUnread({}, lambdaContext())).toBe(200);
		expect(await readJson({}, lambdaContext())).toMatchObject({ ok: true });

		// Drained, not aborted: the one connection served all four invocations.
		expect(server.stats.connections).toBe(1);
		expect(stats.map((s) => s.leftovers)).toEqual([
			{ dumped: 1, aborted: 0 },
			{ dumped: 0, aborted: 0 },
			{ dumped: 1, aborted: 0 },
			{ dumped: 0, aborted: 0 },
		]);
	});

	it("closes the connection of an unread body too large to drain, rather than reading megabytes", async () => {
		const stats: HttpPoolStats[] = [];
		const { leaveUnread, readJson } = unreadThenRead(5_000_000, stats);

		expect(await leaveUnread({}, lambdaContext())).toBe(200);
		expect(await readJson({}, lambdaContext())).toMatchObject({ ok: true });

		expect(stats[0]?.leftovers).toEqual({ dumped: 0, aborted: 1 });
		expect(server.stats.connections).toBe(2);
	});

	it("fails a body stream the handler kept past the invocation, instead of leaving it hanging", async () => {
		const kept = middy(async (_event: unknown, context: HttpContext) => {
			const { body } = await context.http.request({ path: "/large?bytes=100000", method: "GET" });
			return { body };
		}).use(poolOfOne([]));

		const { body } = await kept({}, lambdaContext());

		await expect(body.text()).rejects.toMatchObject({ code: errorCodes.invocationEnded });
	});

	it("leaves alone a small body that arrived in full, even unread", async () => {
		const stats: HttpPoolStats[] = [];
		const handler = middy(async (_event: unknown, context: HttpContext) => {
			const { body } = await context.http.request({ path: "/json", method: "GET" });
			// the whole response is buffered before the handler even looks at it
			await new Promise((resolve) => setTimeout(resolve, 20));
			return { body };
		}).use(poolOfOne(stats));

		const { body } = await handler({}, lambdaContext());

		expect(await body.json()).toMatchObject({ ok: true });
		expect(stats[0]?.leftovers).toEqual({ dumped: 0, aborted: 0 });
	});

	it("aborts a request the handler neither awaited nor handed to waitUntil, and says so", async () => {
		const logger = spyLogger();
		const stats: HttpPoolStats[] = [];
		let forgotten: Promise<unknown> | undefined;
		const handler = middy(async (_event: unknown, context: HttpContext) => {
			forgotten = context.http.request({ path: "/hang", method: "GET" }).catch((error: unknown) => error);
			await vi.waitFor(() => expect(server.receivedCount("GET", "/hang")).toBe(1));
			return "returned";
		}).use(poolOfOne(stats, logger));

		expect(await handler({}, lambdaContext())).toBe("returned");

		// Failed before the invocation returned, rather than frozen with the process and answered in a later one.
		expect(await Promise.race([forgotten, "still pending"])).toMatchObject({
			code: errorCodes.invocationEnded,
		});
		expect(stats[0]?.leftovers).toEqual({ dumped: 0, aborted: 1 });
		expect(logger.warn).toHaveBeenCalledWith(
			expect.stringMatching(/1 request\(s\) still waiting for a response/),
		);
		await vi.waitFor(() => expect(server.stats.open).toBe(0));
	});

	it("tears everything down at once when an onError throws and Middy rethrows without running ours", async () => {
		const stats: HttpPoolStats[] = [];
		let inFlight: Promise<unknown> | undefined;
		let taskSignal: AbortSignal | undefined;
		const handler = middy(async (_event: unknown, context: HttpContext) => {
			inFlight = context.http.request({ path: "/hang", method: "GET" });
			inFlight.catch(() => {});
			context.waitUntil((signal) => {
				taskSignal = signal;
				return new Promise(() => {});
			});
			await vi.waitFor(() => expect(server.receivedCount("GET", "/hang")).toBe(1));
			throw new Error("handler failed");
		})
			.use(poolOfOne(stats))
			.use({
				onError: () => {
					throw new Error("onError failed too");
				},
			});

		await expect(handler({}, lambdaContext(10_000))).rejects.toThrow("onError failed too");

		await expect(inFlight).rejects.toMatchObject({ code: errorCodes.invocationEnded });
		expect(taskSignal?.aborted).toBe(true);
		expect(stats[0]).toMatchObject({ leftovers: { aborted: 1 }, background: { aborted: 1 } });
		await vi.waitFor(() => expect(server.stats.open).toBe(0));
	});
});
