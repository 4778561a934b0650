// Lambda Managed Instances (LMI) run the Node runtime as several worker threads per execution environment
// (AWS_LAMBDA_NODEJS_WORKER_COUNT), each with its own module scope, and each running many invocations at once
// (async concurrency, up to 64 per vCPU by default); the environment is never frozen. For httpPool() this means:
// the warm undici pool is per worker, not per environment. Each worker keeps its own `connections`, so a partner
// API sees up to instances × workers × connections sockets (and TLS handshakes) from one function; nothing is
// shared between workers; and each worker's telemetry counts its own sockets only.
//
// Here: real worker threads (the harness's startWorkerThreadsEnvironment) load a function module
// (fixtures/worker-function.ts) as the runtime does, against an HTTPS server on 127.0.0.1 that counts the TCP
// connections, TLS handshakes and requests it sees, and which connection carried each request.
import {
	invokeInRounds,
	startWorkerThreadsEnvironment,
	type WorkerThreadsEnvironment,
} from "@middy-conn/test-harness";
import { useHttpServer } from "@middy-conn/test-harness/test-fixtures";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { WorkerEvent, WorkerReport, WorkerResult } from "./fixtures/worker-function.ts";

const FUNCTION_MODULE = new URL("./fixtures/worker-function.ts", import.meta.url);
/** Worker threads per environment (AWS_LAMBDA_NODEJS_WORKER_COUNT). */
const WORKERS = 3;
/** `connections` of each worker's pool. */
const CONNECTIONS = 2;
/** Invocations in flight at once in each worker. */
const CONCURRENCY = 20;
const ROUNDS = 3;
/** How long the server holds each request before it answers (ms), so that the invocations overlap. */
const HOLD_MS = 20;

let environment: WorkerThreadsEnvironment | undefined;
/** Requests the server is holding (not answered yet) right now, and the most it held at once. */
let inFlight = 0;
let peakInFlight = 0;
/** The most TCP connections open at once, as seen when a request arrived. */
let peakOpen = 0;

const server = useHttpServer({
	tls: true,
	routes: {
		"/held": (_req, res, received) => {
			inFlight++;
			peakInFlight = Math.max(peakInFlight, inFlight);
			peakOpen = Math.max(peakOpen, server.stats.open);
			let held = true;
			const answer = () => {
				if (!held) return;
				held = false;
				inFlight--;
			};
			const timer = setTimeout(() => {
				answer();
				res.writeHead(200, { "content-type": "application/json" });
				res.end(JSON.stringify({ socketId: received.socketId }));
			}, HOLD_MS);
			res.on("close", () => {
				clearTimeout(timer);
				answer();
			});
		},
	},
});

beforeEach(() => {
	inFlight = 0;
	peakInFlight = 0;
	peakOpen = 0;
});

// Runs before the fixture resets the server's stats (registered later).
afterEach(async () => {
	await environment?.terminate();
	environment = undefined;
	server.destroyAllSockets();
});

const startWorkers = async () => {
	environment = await startWorkerThreadsEnvironment({
		module: FUNCTION_MODULE,
		workers: WORKERS,
		env: {
			API_ORIGIN: server.origin,
			API_CONNECTIONS: String(CONNECTIONS),
			API_CA: server.ca ?? "",
		},
	});
	return environment;
};

/** `rounds` times: `concurrency` GETs at once in every given worker; every one of them must succeed. */
const runRounds = async (
	workers: WorkerThreadsEnvironment["workers"],
	rounds: number,
	concurrency: number,
): Promise<{ worker: number; result: WorkerResult }[]> => {
	const outcomes = await invokeInRounds<WorkerEvent, WorkerResult>(workers, rounds, concurrency, () => ({
		path: "/held",
	}));
	expect(outcomes.filter((outcome) => outcome.error !== undefined).map((outcome) => outcome.error)).toEqual(
		[],
	);
	return outcomes.map((outcome) => ({ worker: outcome.worker, result: outcome.result as WorkerResult }));
};

/** The server's connection ids that carried each worker's requests. */
const socketsByWorker = (outcomes: { worker: number; result: WorkerResult }[]) =>
	new Map(
		[...new Set(outcomes.map((outcome) => outcome.worker))].map((worker) => [
			worker,
			new Set(outcomes.filter((outcome) => outcome.worker === worker).map((o) => o.result.socketId)),
		]),
	);

/** Polls until the server has `expected` sockets open; bounded. Returns the last count. */
const settleOpenSockets = async (expected: number, timeoutMs = 2000) => {
	const deadline = Date.now() + timeoutMs;
	while (server.stats.open !== expected && Date.now() < deadline) {
		await new Promise((resolve) => setTimeout(resolve, 10));
	}
	return server.stats.open;
};

describe(`httpPool in ${WORKERS} worker threads (connections ${CONNECTIONS}, ${CONCURRENCY} invocations at once per worker), over HTTPS`, () => {
	it("answers every invocation, each worker over at most `connections` sockets of its own: the server never sees more than workers × connections", async () => {
		const env = await startWorkers();
		const outcomes = await runRounds(env.workers, ROUNDS, CONCURRENCY);

		expect(outcomes).toHaveLength(WORKERS * ROUNDS * CONCURRENCY);
		for (const { worker, result } of outcomes) {
			expect(result).toEqual({
				threadId: env.workers[worker]?.threadId,
				statusCode: 200,
				socketId: expect.any(Number),
			});
		}
		expect(server.receivedCount("GET", "/held")).toBe(WORKERS * ROUNDS * CONCURRENCY);

		const sockets = socketsByWorker(outcomes);
		expect(sockets.size).toBe(WORKERS);
		for (const ids of sockets.values()) {
			expect(ids.size).toBeLessThanOrEqual(CONNECTIONS);
			// and 20 invocations at once do fill it: the limit, not a lack of load, is what holds them
			expect(ids.size).toBe(CONNECTIONS);
		}
		// no socket carried requests of two workers: each worker has its own pool
		const all = [...sockets.values()].flatMap((ids) => [...ids]);
		expect(new Set(all).size).toBe(all.length);
		// every socket the server accepted over 180 invocations is one of those: reused, never re-opened
		expect(server.stats.connections).toBe(all.length);
		expect(server.stats.connections).toBeLessThanOrEqual(WORKERS * CONNECTIONS);
		expect(server.stats.tlsHandshakes).toBe(server.stats.connections);
		expect(peakOpen).toBeLessThanOrEqual(WORKERS * CONNECTIONS);
		expect(peakInFlight).toBeLessThanOrEqual(WORKERS * CONNECTIONS);
	});

	it("counts in each worker's invocation stats the sockets of that worker only, new and reused", async () => {
		const env = await startWorkers();
		const outcomes = await runRounds(env.workers, ROUNDS, CONCURRENCY);
		const sockets = socketsByWorker(outcomes);

		const reports = (await env.shutdown()).map((shutdown) => shutdown.report as WorkerReport);
		reports.forEach((report, worker) => {
			expect(report).toEqual({
				threadId: env.workers[worker]?.threadId,
				invocations: ROUNDS * CONCURRENCY,
				requests: ROUNDS * CONCURRENCY,
				connectionsOpened: sockets.get(worker)?.size,
				connectionsReused: ROUNDS * CONCURRENCY - (sockets.get(worker)?.size ?? 0),
				warnings: 0,
			});
		});
	});

	it("closing the pools of one worker leaves the other workers' warm sockets in place", async () => {
		const env = await startWorkers();
		const before = socketsByWorker(await runRounds(env.workers, 1, CONCURRENCY));
		const [first, ...others] = env.workers;
		if (!first) throw new Error("no worker");
		const opened = server.stats.connections;

		const closed = await first.shutdown();
		expect(closed.error).toBeUndefined();
		const remaining = opened - (before.get(first.index)?.size ?? 0);
		expect(await settleOpenSockets(remaining)).toBe(remaining);

		// the other workers go on over the very sockets they had: the server accepts no new connection
		const after = socketsByWorker(await runRounds(others, 1, CONCURRENCY));
		for (const [worker, ids] of after) {
			expect([...ids].every((id) => before.get(worker)?.has(id))).toBe(true);
		}
		expect(server.stats.connections).toBe(opened);
		expect(server.stats.open).toBe(remaining);
	});

	it("after every worker has closed its pools, no socket is left open and each worker exits by itself", async () => {
		const env = await startWorkers();
		await runRounds(env.workers, 1, CONCURRENCY);
		expect(server.stats.open).toBeGreaterThan(0);

		const shutdowns = await env.shutdown();
		for (const shutdown of shutdowns) {
			expect(shutdown.error).toBeUndefined();
			// no socket or timer left behind in the worker's event loop
			expect(shutdown).toMatchObject({ exitedByItself: true, activeResources: [] });
		}
		expect(await settleOpenSockets(0)).toBe(0);
	});
});
