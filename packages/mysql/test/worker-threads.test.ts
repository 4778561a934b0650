// Lambda Managed Instances (LMI) run the Node runtime as several worker threads per execution environment
// (AWS_LAMBDA_NODEJS_WORKER_COUNT), each with its own module scope, and each running many invocations at once
// (async concurrency, up to 64 per vCPU by default); the environment is never frozen. For mysqlConnection() this
// means: a warm pool is per worker, not per environment. Each worker's pool keeps its own `connectionLimit`, so
// the database sees up to instances × workers × connectionLimit connections from one function (in mode scoped:
// instances × workers × concurrent invocations per worker); nothing is shared between workers; and the
// concurrent invocations inside a worker must still each get a session of their own.
//
// Here: real worker threads (the harness's startWorkerThreadsEnvironment) load a function module
// (fixtures/worker-function.ts) as the runtime does, against the run's MariaDB on 127.0.0.1. Every claim is
// checked on the server side: CONNECTION_ID(), information_schema.PROCESSLIST, the rows a session can see, and
// the account's MAX_USER_CONNECTIONS.
import {
	databaseEnvironment,
	invokeInRounds,
	startWorkerThreadsEnvironment,
	type WorkerOutcome,
	type WorkerThreadsEnvironment,
} from "@middy-conn/test-harness";
import { useTestDatabase } from "@middy-conn/test-harness/test-fixtures";
import type { RowDataPacket } from "mysql2";
import { afterEach, describe, expect, it } from "vitest";
import type { WorkerEvent, WorkerReport, WorkerResult } from "./fixtures/worker-function.ts";

const FUNCTION_MODULE = new URL("./fixtures/worker-function.ts", import.meta.url);
/** Worker threads per environment (AWS_LAMBDA_NODEJS_WORKER_COUNT). */
const WORKERS = 3;
/** connectionLimit of each worker's pool. */
const CONNECTION_LIMIT = 2;
/** Invocations in flight at once in each worker. */
const CONCURRENCY = 20;
const ROUNDS = 3;

const { admin, db } = useTestDatabase("mysql_workers", {
	tables: ["marks (token VARCHAR(64) PRIMARY KEY) ENGINE=InnoDB"],
	settle: "wait",
});
let environment: WorkerThreadsEnvironment | undefined;

// Runs before the fixture's settle (registered later).
afterEach(async () => {
	await environment?.terminate();
	environment = undefined;
	await admin.query(`ALTER USER '${db.user}'@'%' WITH MAX_USER_CONNECTIONS 0`);
	await admin.killUser(db.user);
});

const startWorkers = async (mode: "pool" | "scoped", workers: number) => {
	environment = await startWorkerThreadsEnvironment({
		module: FUNCTION_MODULE,
		workers,
		env: {
			...databaseEnvironment(db),
			DB_MODE: mode,
			DB_CONNECTION_LIMIT: String(CONNECTION_LIMIT),
		},
	});
	return environment;
};

type Outcome = WorkerOutcome<WorkerEvent, WorkerResult>;

/** `rounds` times: `concurrency` invocations at once in every given worker, half of them leaving a transaction open. */
const runRounds = (
	workers: WorkerThreadsEnvironment["workers"],
	rounds: number,
	concurrency: number,
	label = "load",
): Promise<Outcome[]> =>
	invokeInRounds<WorkerEvent, WorkerResult>(workers, rounds, concurrency, (worker, round, i) => ({
		token: `${label}-w${worker}-r${round}-i${i}`,
		leaveOpen: i % 2 === 0,
	}));

/** Samples the user's server connections (PROCESSLIST) until stopped; bounded in time and count. */
const sampleConnections = (user: string) => {
	let running = true;
	const samples: number[] = [];
	const deadline = Date.now() + 60_000;
	const sampling = (async () => {
		while (running && samples.length < 50_000 && Date.now() < deadline) {
			samples.push(await admin.connectionsOf(user));
		}
	})();
	return {
		stop: async () => {
			running = false;
			await sampling;
			return samples;
		},
	};
};

const succeeded = (outcomes: Outcome[]) => {
	expect(outcomes.filter((outcome) => outcome.error !== undefined).map((outcome) => outcome.error)).toEqual(
		[],
	);
	return outcomes.map((outcome) => ({ ...outcome, result: outcome.result as WorkerResult }));
};

/** The connection ids each worker's invocations ran on, by worker index, in index order. */
const idsByWorker = (outcomes: { worker: number; result: WorkerResult }[]) =>
	new Map(
		[...new Set(outcomes.map((outcome) => outcome.worker))]
			.sort((a, b) => a - b)
			.map((worker) => [
				worker,
				new Set(outcomes.filter((outcome) => outcome.worker === worker).map((o) => o.result.connectionId)),
			]),
	);

const committedMarks = async () =>
	Number(
		(await admin.query<RowDataPacket[]>(`SELECT COUNT(*) AS n FROM \`${db.database}\`.marks`))[0]?.n ??
			Number.NaN,
	);

describe(`mode pool in ${WORKERS} worker threads (connectionLimit ${CONNECTION_LIMIT}, ${CONCURRENCY} invocations at once per worker)`, () => {
	it("serves every invocation in a session of its own: no user variable and no uncommitted write crosses invocations, within a worker or between workers", async () => {
		const env = await startWorkers("pool", WORKERS);
		const outcomes = succeeded(await runRounds(env.workers, ROUNDS, CONCURRENCY));

		expect(outcomes).toHaveLength(WORKERS * ROUNDS * CONCURRENCY);
		for (const { worker, event, result } of outcomes) {
			expect(result).toEqual({
				threadId: env.workers[worker]?.threadId,
				connectionId: expect.any(Number),
				sameConnectionThroughout: true,
				// the connection was used by other invocations before: their @token was reset away
				tokenBefore: null,
				tokenAfter: event.token,
				// its own uncommitted row, and none of the 59 others written at the same time
				visibleMarks: 1,
				ownMarks: 1,
			});
		}
		// half rolled back by the handler, half left open and rolled back by the middleware: nothing committed
		expect(await committedMarks()).toBe(0);
		const reports = (await env.shutdown()).map((shutdown) => shutdown.report as WorkerReport);
		for (const report of reports) {
			expect(report).toMatchObject({
				invocations: ROUNDS * CONCURRENCY,
				closed: { released: ROUNDS * CONCURRENCY },
				transaction: { "rolled-back": ROUNDS * CONCURRENCY },
				// one warning per transaction the handler left open
				warnings: (ROUNDS * CONCURRENCY) / 2,
			});
		}
	});

	it("holds at most connectionLimit connections per worker and shares none between workers: the function stays within workers × connectionLimit", async () => {
		// The database's side of the budget: a connect beyond workers × connectionLimit is refused, and with the
		// function's connectRetry off, a refusal fails an invocation. This guards the cold start, when every
		// worker's pool connects at once. Only that: MariaDB (10.11) stops counting a session against
		// MAX_USER_CONNECTIONS once it has been reset (COM_RESET_CONNECTION, done on every release), so from then
		// on the PROCESSLIST samples and the connection ids are what hold the line.
		await admin.query(`ALTER USER '${db.user}'@'%' WITH MAX_USER_CONNECTIONS ${WORKERS * CONNECTION_LIMIT}`);
		const env = await startWorkers("pool", WORKERS);
		const sampler = sampleConnections(db.user);
		const outcomes = succeeded(await runRounds(env.workers, ROUNDS, CONCURRENCY));
		const samples = await sampler.stop();

		const perWorker = [...idsByWorker(outcomes).values()];
		expect(perWorker).toHaveLength(WORKERS);
		for (const ids of perWorker) {
			expect(ids.size).toBeLessThanOrEqual(CONNECTION_LIMIT);
			// and 20 invocations at once do fill it: the limit, not a lack of load, is what holds them
			expect(ids.size).toBe(CONNECTION_LIMIT);
		}
		// no connection id appears in two workers: each worker has its own pool
		const all = perWorker.flatMap((ids) => [...ids]);
		expect(new Set(all).size).toBe(all.length);
		expect(samples.length).toBeGreaterThan(0);
		expect(Math.max(...samples)).toBeLessThanOrEqual(WORKERS * CONNECTION_LIMIT);
		// the pools are still warm: exactly the connections the invocations used are open
		expect(await admin.connectionsOf(db.user)).toBe(all.length);

		// each worker's stats count its own connects only: as many as connection ids it used
		const reports = (await env.shutdown()).map((shutdown) => shutdown.report as WorkerReport);
		expect(reports.map((report) => report.connected)).toEqual(perWorker.map((ids) => ids.size));
		expect(reports.map((report) => report.threadId)).toEqual(env.workers.map((worker) => worker.threadId));
	});

	it("closing the pools of one worker leaves the other workers' warm connections in place", async () => {
		const env = await startWorkers("pool", WORKERS);
		const before = idsByWorker(succeeded(await runRounds(env.workers, 1, CONCURRENCY, "warm")));
		const [first, ...others] = env.workers;
		if (!first) throw new Error("no worker");
		const closed = await first.shutdown();
		expect(closed.error).toBeUndefined();
		const remaining = others.reduce((sum, worker) => sum + (before.get(worker.index)?.size ?? 0), 0);
		expect(await admin.settleConnections(db.user, remaining)).toBe(remaining);

		// the other workers go on with the very connections they had: none opens a new one
		const after = idsByWorker(succeeded(await runRounds(others, 1, CONCURRENCY, "after")));
		expect(after.size).toBe(others.length);
		for (const [worker, ids] of after) {
			expect([...ids].every((id) => before.get(worker)?.has(id))).toBe(true);
		}
		expect(await admin.connectionsOf(db.user)).toBe(remaining);
	});

	it("after every worker has closed its pools, the user has no connection left and each worker exits by itself", async () => {
		const env = await startWorkers("pool", WORKERS);
		succeeded(await runRounds(env.workers, 1, CONCURRENCY));
		expect(await admin.connectionsOf(db.user)).toBeGreaterThan(0);

		const shutdowns = await env.shutdown();
		for (const shutdown of shutdowns) {
			expect(shutdown.error).toBeUndefined();
			// no socket or timer left behind in the worker's event loop
			expect(shutdown).toMatchObject({ exitedByItself: true, activeResources: [] });
		}
		expect(await admin.settleConnections(db.user, 0)).toBe(0);
	});
});

describe(`mode scoped in worker threads (${CONCURRENCY} invocations at once per worker)`, () => {
	const workers = 2;

	it("opens one connection per invocation, at most as many at once as invocations run, and closes every one of them", async () => {
		const env = await startWorkers("scoped", workers);
		const sampler = sampleConnections(db.user);
		const outcomes = succeeded(await runRounds(env.workers, ROUNDS, CONCURRENCY));
		const samples = await sampler.stop();

		const ids = outcomes.map((outcome) => outcome.result.connectionId);
		// a new server connection for every invocation, never one of another's
		expect(new Set(ids).size).toBe(workers * ROUNDS * CONCURRENCY);
		for (const { event, result } of outcomes) {
			expect(result).toMatchObject({
				sameConnectionThroughout: true,
				tokenBefore: null,
				tokenAfter: event.token,
				visibleMarks: 1,
			});
		}
		expect(Math.max(...samples)).toBeLessThanOrEqual(workers * CONCURRENCY);
		// every invocation closed its connection before returning: none is left once they all have returned
		expect(await admin.settleConnections(db.user, 0)).toBe(0);
		expect(await committedMarks()).toBe(0);

		const shutdowns = await env.shutdown();
		for (const shutdown of shutdowns) {
			expect(shutdown).toMatchObject({
				report: { invocations: ROUNDS * CONCURRENCY, closed: { ended: ROUNDS * CONCURRENCY } },
				exitedByItself: true,
			});
		}
	});
});
