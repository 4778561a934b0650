// Overhead: what the middlewares cost an invocation that does not use them. Both are configured as a real
// handler would configure them, and the handler touches neither (scoped mode opens nothing, the HTTP pool stays
// idle). Invocations take microseconds, so a sample times 100 in a row (one timer read per call would dominate).
//
// Each contender runs in a process of its own (overhead-process.ts), and the processes take turns, round by
// round. The contenders make different amounts of garbage, and in one shared process the collections one of them
// causes land on whichever happens to run next (issue 14 measured the references slowed that way). Alone, each
// pays for its own garbage, and its process counts the collections it ran.
import { fileURLToPath } from "node:url";
import middy from "@middy/core";
import type { Context } from "aws-lambda";
import { spawnTracked } from "../cleanup.ts";
import { invoker } from "./lambda.ts";
import { loadHttpPool, loadMysql } from "./middlewares.ts";
import type { DbPeer, HttpPeer } from "./peers.ts";
import { type ComparisonResult, type Contender, type GcCounts, runComparison } from "./runner.ts";
import { type Mode, pace } from "./settings.ts";

export const NAMES = {
	bare: "bare handler",
	middy: "middy alone",
	noop: "middy + 2 no-op middlewares",
	both: "middy + httpPool + mysqlConnection (untouched)",
	httpPoolOnly: "middy + httpPool (untouched)",
	mysqlOnly: "middy + mysqlConnection (untouched)",
} as const;

const INNER = 100;

export type OverheadVariant = keyof typeof NAMES;

/** What a contender's process needs to build its handler. */
export interface OverheadJob {
	variant: OverheadVariant;
	http: { origin: string; ca: string };
	db: DbPeer["config"];
}

const NOTES: Record<OverheadVariant, string> = {
	bare: "`async (event, context) => response`, called directly",
	middy: "`middy(handler)` with no middleware",
	noop: "two middlewares whose `before`/`after`/`onError` do nothing: the floor for any two (not a goal)",
	both: "`.use(httpPool(...)).use(mysqlConnection(...))`, defaults (scoped mode)",
	httpPoolOnly: "attribution: httpPool alone",
	mysqlOnly: "attribution: mysqlConnection alone",
};

const respond = async (event: { id: number }, _context: Context) => ({
	statusCode: 200,
	body: `{"id":${event.id}}`,
});

/** One invocation of the job's variant (in the contender's own process). */
export const buildOverheadInvoke = async (job: OverheadJob): Promise<() => Promise<unknown>> => {
	const httpOptions = { origin: job.http.origin, connections: 4, connect: { ca: job.http.ca } };
	const needsHttp = job.variant === "both" || job.variant === "httpPoolOnly";
	const needsDb = job.variant === "both" || job.variant === "mysqlOnly";
	const [http, db] = await Promise.all([
		needsHttp ? loadHttpPool() : undefined,
		needsDb ? loadMysql() : undefined,
	]);
	if (needsHttp && !http?.module) throw new Error(http?.problem ?? "no http-pool");
	if (needsDb && !db?.module) throw new Error(db?.problem ?? "no mysql");
	const noopMiddleware = () => ({ before: () => {}, after: () => {}, onError: () => {} });
	switch (job.variant) {
		case "bare":
			return invoker(respond);
		case "middy":
			return invoker(middy(respond));
		case "noop":
			// What any two middlewares cost: middy awaits each before/after hook, even a synchronous no-op.
			return invoker(middy(respond).use(noopMiddleware()).use(noopMiddleware()));
		case "both": {
			const httpPool = http?.module?.httpPool(httpOptions);
			const mysql = db?.module?.mysqlConnection({ config: job.db });
			if (!httpPool || !mysql) throw new Error("the middlewares did not load");
			return invoker(middy(respond).use(httpPool).use(mysql));
		}
		case "httpPoolOnly": {
			const httpPool = http?.module?.httpPool(httpOptions);
			if (!httpPool) throw new Error("http-pool did not load");
			return invoker(middy(respond).use(httpPool));
		}
		case "mysqlOnly": {
			const mysql = db?.module?.mysqlConnection({ config: job.db });
			if (!mysql) throw new Error("mysql did not load");
			return invoker(middy(respond).use(mysql));
		}
	}
};

/** Messages between the runner and a contender's process. */
export type OverheadRequest =
	| { type: "batch"; count: number; inner: number; record: boolean }
	| { type: "exit" };
export type OverheadReply =
	| { type: "ready" }
	| { type: "batch"; samples: number[] }
	| { type: "gcs"; gcs: GcCounts }
	| { type: "failed"; error: string };

const script = fileURLToPath(new URL("./overhead-process.ts", import.meta.url));

/** A contender whose invocations run in a process of its own, one batch at a time when the runner asks. */
const isolatedContender = async (job: OverheadJob): Promise<Contender> => {
	const child = spawnTracked(process.execPath, [script], {
		stdio: ["ignore", "inherit", "pipe", "ipc"],
		// Bounded: the whole comparison takes seconds; a child that hangs is killed and reported.
		timeoutMs: 300_000,
		env: { ...process.env, NODE_OPTIONS: "", MIDDY_CONN_BENCH_OVERHEAD_JOB: JSON.stringify(job) },
	});
	let stderr = "";
	child.stderr?.on("data", (chunk: Buffer) => {
		stderr += chunk.toString();
	});
	const next = (): Promise<OverheadReply> =>
		new Promise((resolve, reject) => {
			const onExit = (code: number | null) =>
				reject(new Error(`overhead contender ${job.variant} exited (${code}): ${stderr.trim().slice(-500)}`));
			child.once("exit", onExit);
			child.once("message", (message: OverheadReply) => {
				child.removeListener("exit", onExit);
				if (message.type === "failed")
					reject(new Error(`overhead contender ${job.variant}: ${message.error}`));
				else resolve(message);
			});
		});
	await next();
	let gcs: GcCounts | undefined;
	let stopped: Promise<void> | undefined;
	const stop = async () => {
		if (child.exitCode !== null || child.signalCode !== null) return;
		const reply = next();
		child.send({ type: "exit" } satisfies OverheadRequest);
		const answer = await reply.catch(() => undefined);
		if (answer?.type === "gcs") gcs = answer.gcs;
		await new Promise((resolve) =>
			child.exitCode === null && child.signalCode === null ? child.once("exit", resolve) : resolve(null),
		);
	};
	return {
		name: NAMES[job.variant],
		note: NOTES[job.variant],
		invoke: () => Promise.reject(new Error("runs in its own process: use timeBatch")),
		async timeBatch(count, inner, record) {
			const reply = next();
			child.send({ type: "batch", count, inner, record } satisfies OverheadRequest);
			const answer = await reply;
			return answer.type === "batch" ? answer.samples : [];
		},
		gcs: () => gcs,
		// Once: the counts come with the process's exit.
		teardown: () => {
			stopped ??= stop();
			return stopped;
		},
	};
};

export const runOverheadGroup = async (
	mode: Mode,
	peers: { http: HttpPeer; db: DbPeer; middlewaresAvailable: { http: boolean; mysql: boolean } },
): Promise<ComparisonResult[]> => {
	const { http, db, middlewaresAvailable } = peers;
	const variants: OverheadVariant[] = ["bare", "middy", "noop"];
	if (middlewaresAvailable.http && middlewaresAvailable.mysql) variants.push("both");
	if (middlewaresAvailable.http) variants.push("httpPoolOnly");
	if (middlewaresAvailable.mysql) variants.push("mysqlOnly");
	const contenders = await Promise.all(
		variants.map((variant) =>
			isolatedContender({ variant, http: { origin: http.origin, ca: http.ca }, db: db.config }),
		),
	);

	mode.log("Overhead of untouched middlewares (each contender in its own process, taking turns)");
	try {
		const result = await runComparison(
			{
				id: "overhead",
				title: "Overhead: middlewares an invocation does not use",
				description:
					"A handler that returns a constant. Each contender runs in a process of its own, and the processes take turns, round by round, so that each pays for the garbage it makes (in one shared process, collections land on whichever contender runs next); each process counts the collections it ran (a PerformanceObserver of `gc` entries) during the recorded rounds. Each sample is the mean of 100 consecutive invocations. The reference is middy alone.",
				reference: NAMES.middy,
				contenders,
				inner: INNER,
				...pace(mode, { budgetMs: 10_000, batch: 10, warmup: 50 }),
			},
			mode.log,
		);
		// The counts arrive with the processes' exit.
		await Promise.all(contenders.map((contender) => contender.teardown?.()));
		for (const contender of result.contenders) {
			const gcs = contenders.find((c) => c.name === contender.name)?.gcs?.();
			if (gcs && gcs.invocations > 0) {
				contender.gcPer10k = {
					minor: (gcs.minor / gcs.invocations) * 10_000,
					major: (gcs.major / gcs.invocations) * 10_000,
				};
			}
		}
		return [result];
	} finally {
		await Promise.allSettled(contenders.map((contender) => contender.teardown?.()));
	}
};
