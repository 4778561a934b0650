// One memory run, in its own process started with --expose-gc (memory.ts): warm invocations of one variant,
// and after a full GC at each checkpoint, the process's RSS and heap. A leak of one small object per invocation
// shows as a steady slope; a pool or the JIT filling up shows as a step early on.
import { setTimeout } from "node:timers/promises";
import middy from "@middy/core";
import mysql from "mysql2/promise";
import { Pool } from "undici";
import { benchEvent, invoker } from "./lambda.ts";
import { loadHttpPool, loadMysql } from "./middlewares.ts";

export interface MemoryJob {
	variant: "middlewares-pool" | "middlewares-scoped" | "bare-pool" | "bare-scoped";
	origin: string;
	ca: string;
	db: { host: string; port: number; user: string; password: string; database: string };
	checkpoints: number[];
}

export interface MemoryReading {
	invocations: number;
	rss: number;
	/** V8's reserved heap: the young generation grows with the allocation rate, and RSS with it. */
	heapTotal: number;
	heapUsed: number;
	external: number;
	arrayBuffers: number;
}

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --expose-gc");
const job = JSON.parse(process.env.MIDDY_CONN_BENCH_MEMORY_JOB ?? "null") as MemoryJob | null;
if (!job) throw new Error("MIDDY_CONN_BENCH_MEMORY_JOB is not set");

const SQL = "SELECT id, customer, total FROM orders WHERE id = ?";
const post = { path: "/echo", method: "POST" as const, body: '{"event":"order-viewed"}' };
const connect = { ca: job.ca };

/** The same work in every variant: a GET, one background POST, one query. */
const build = async (): Promise<() => Promise<unknown>> => {
	if (job.variant === "bare-pool" || job.variant === "bare-scoped") {
		const pool = new Pool(job.origin, { connections: 4, connect });
		const db = mysql.createPool({ ...job.db, connectionLimit: 4 });
		const scoped = job.variant === "bare-scoped";
		const handler = middy(async () => {
			const response = await pool.request({ path: "/json", method: "GET" });
			const item = await response.body.json();
			if (scoped) {
				const connection = await mysql.createConnection(job.db);
				try {
					await connection.query(SQL, [benchEvent.id]);
				} finally {
					await connection.end();
				}
			} else {
				const connection = await db.getConnection();
				try {
					await connection.query(SQL, [benchEvent.id]);
				} finally {
					connection.release();
				}
			}
			await pool.request(post).then((r) => r.body.dump());
			return item;
		});
		return invoker(handler);
	}
	const [http, sql] = await Promise.all([loadHttpPool(), loadMysql()]);
	if (!http.module || !sql.module) throw new Error(http.problem ?? sql.problem);
	const mode = job.variant === "middlewares-pool" ? "pool" : "scoped";
	const handler = middy()
		.use(http.module.httpPool({ origin: job.origin, connections: 4, connect }))
		.use(
			sql.module.mysqlConnection({
				config: mode === "pool" ? { ...job.db, connectionLimit: 4 } : job.db,
				mode,
			}),
		)
		.handler(async (_event: unknown, context) => {
			const response = await context.http.request({ path: "/json", method: "GET" });
			const item = await response.body.json();
			await context.db.query(SQL, [benchEvent.id]);
			context.waitUntil(context.http.request(post).then((r) => r.body.dump()));
			return item;
		});
	return invoker(handler);
};

const read = async (invocations: number): Promise<MemoryReading> => {
	// A closed connection stays reachable until its socket's close events have run (mysql2's end() resolves
	// before that): let them run, so that a reading does not depend on where the last close happened to be.
	await setTimeout(100);
	// Twice: the first full GC can leave finalizable objects (sockets, FinalizationRegistry) for the second.
	gc();
	gc();
	const { rss, heapTotal, heapUsed, external, arrayBuffers } = process.memoryUsage();
	return { invocations, rss, heapTotal, heapUsed, external, arrayBuffers };
};

const invoke = await build();
let done = 0;
for (const checkpoint of [...job.checkpoints].sort((a, b) => a - b)) {
	while (done < checkpoint) {
		await invoke();
		done++;
	}
	process.send?.({ type: "reading", reading: await read(done) });
}
process.send?.({ type: "done" });
process.exit(0);
