// Contenders in processes of their own. Within a comparison the contenders make very different amounts of
// garbage (a new TLS client per invocation against a warm pool, a processlist query against none), and in one
// shared process the collections one of them causes land on whichever runs next: issue 14 measured references
// slowed that way. So each contender runs in a child process (contender-process.ts) that builds the whole
// comparison's contenders exactly as in-process runs do, keeps its own and drops the others; the runner
// (runner.ts) then has the processes take turns, round by round, and each pays for its own garbage. Each process
// also counts the collections it ran while recording, for the report.
import { fileURLToPath } from "node:url";
import { spawnTracked } from "../cleanup.ts";
import {
	attachGcCounts,
	type ComparisonResult,
	type ComparisonSpec,
	type Contender,
	type GcCounts,
	runComparison,
	teardownAll,
} from "./runner.ts";
import { type Mode, type Pace, pace } from "./settings.ts";

/** What a contender's process builds: `buildContenders(comparison, args)` of `module`, and keeps `index`. */
export interface IsolatedJob {
	/** The group's module (its file URL), which exports `buildContenders`. */
	module: string;
	comparison: string;
	index: number;
	/** Whatever the group needs to build its contenders (peers' addresses, configs): JSON only. */
	args: unknown;
}

/** A group module, as a contender's process loads it. */
export interface ContenderGroup {
	buildContenders(comparison: string, args: unknown): Promise<Contender[]>;
}

export type IsolatedRequest =
	| { type: "batch"; count: number; inner: number; gapMs: number; record: boolean }
	| { type: "exit" };

export type IsolatedReply =
	| { type: "ready"; name: string; note: string | undefined; count: number }
	| { type: "batch"; samples: number[] }
	| { type: "gcs"; gcs: GcCounts }
	| { type: "failed"; error: string };

const script = fileURLToPath(new URL("./contender-process.ts", import.meta.url));

const spawnContender = async (job: IsolatedJob): Promise<{ contender: Contender; count: number }> => {
	const child = spawnTracked(process.execPath, [script], {
		stdio: ["ignore", "inherit", "pipe", "ipc"],
		// Bounded: a comparison takes seconds to a minute; a child that hangs is killed and reported.
		timeoutMs: 600_000,
		env: { ...process.env, NODE_OPTIONS: "", MIDDY_CONN_BENCH_CONTENDER_JOB: JSON.stringify(job) },
	});
	let stderr = "";
	child.stderr?.on("data", (chunk: Buffer) => {
		stderr += chunk.toString();
	});
	const exited = () => child.exitCode !== null || child.signalCode !== null;
	const what = `${job.comparison}, contender ${job.index}`;
	const next = (): Promise<IsolatedReply> =>
		new Promise((resolve, reject) => {
			if (exited()) {
				reject(new Error(`${what}: its process has exited: ${stderr.trim().slice(-500)}`));
				return;
			}
			const onExit = (code: number | null) =>
				reject(new Error(`${what}: its process exited (${code}): ${stderr.trim().slice(-500)}`));
			child.once("exit", onExit);
			child.once("message", (message: IsolatedReply) => {
				child.removeListener("exit", onExit);
				if (message.type === "failed") reject(new Error(`${what}: ${message.error}`));
				else resolve(message);
			});
		});
	const ready = await next();
	if (ready.type !== "ready") throw new Error(`${what}: unexpected ${ready.type}`);

	let gcs: GcCounts | undefined;
	let stopped: Promise<void> | undefined;
	const stop = async () => {
		if (exited()) return;
		const reply = next();
		child.send({ type: "exit" } satisfies IsolatedRequest);
		const answer = await reply.catch(() => undefined);
		if (answer?.type === "gcs") gcs = answer.gcs;
		await new Promise((resolve) => (exited() ? resolve(null) : child.once("exit", resolve)));
	};
	const contender: Contender = {
		name: ready.name,
		note: ready.note,
		invoke: () => Promise.reject(new Error(`${ready.name} runs in its own process: use timeBatch`)),
		async timeBatch(count, inner, gapMs, record) {
			const reply = next();
			child.send({ type: "batch", count, inner, gapMs, record } satisfies IsolatedRequest);
			const answer = await reply;
			return answer.type === "batch" ? answer.samples : [];
		},
		gcs: () => gcs,
		// Once: the collection counts come with the process's exit.
		teardown: () => {
			stopped ??= stop();
			return stopped;
		},
	};
	return { contender, count: ready.count };
};

/**
 * The contenders of one comparison, each in a process of its own: `module` exports `buildContenders`, which the
 * processes call with `comparison` and `args`. Call `teardown` on each (the runner's `teardownAll`) to stop them
 * and collect their collection counts.
 */
export const isolatedContenders = async (
	module: URL,
	comparison: string,
	args: unknown,
): Promise<Contender[]> => {
	const job = (index: number): IsolatedJob => ({ module: module.href, comparison, index, args });
	const first = await spawnContender(job(0));
	const rest = await Promise.allSettled(
		Array.from({ length: first.count - 1 }, (_, i) => spawnContender(job(i + 1))),
	);
	const contenders = [first.contender];
	for (const started of rest) {
		if (started.status === "fulfilled") contenders.push(started.value.contender);
	}
	const failed = rest.find((started) => started.status === "rejected");
	if (failed) {
		await Promise.allSettled(contenders.map((contender) => contender.teardown?.()));
		throw failed.reason;
	}
	return contenders;
};

/**
 * Runs one comparison with its contenders in processes of their own (`module`'s `buildContenders(spec.id, args)`),
 * stops them, and adds their collection counts to the result.
 */
export const runIsolatedComparison = async (
	module: URL,
	mode: Mode,
	spec: Omit<ComparisonSpec, "contenders" | keyof Pace>,
	full: { budgetMs: number; batch: number; warmup?: number },
	args: unknown,
): Promise<ComparisonResult> => {
	const contenders = await isolatedContenders(module, spec.id, args);
	let result: ComparisonResult;
	try {
		result = await runComparison({ ...spec, contenders, ...pace(mode, full) }, mode.log);
	} finally {
		await teardownAll(contenders);
	}
	return attachGcCounts(result, contenders);
};
