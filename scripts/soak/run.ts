// The soak itself: the plan's steps, run by seven execution environments side by side (six standard ones, each one
// invocation at a time and frozen in between, as Lambda instances would be; batch-lmi's a Managed Instances one,
// which takes bursts of invocations at once), the DB restarts (with every environment frozen, and while
// invocations run), the checks after each step and a sampler in between, and the reckoning at the end.
import type { InvocationOutcome } from "@middy-conn/test-harness";
import { type Envelope, FUNCTIONS, type FunctionName, type MemoryProbe } from "./directive.ts";
import {
	checkStatementsEnded,
	type Driver,
	failureExpected,
	type Prepared,
	type SoakContext,
	type StepRun,
} from "./functions/common.ts";
import { exportStream } from "./functions/export-stream.ts";
import { ledgerBatch } from "./functions/ledger-batch.ts";
import { ordersApi } from "./functions/orders-api.ts";
import { Balances, ledgerReader, ledgerWriter } from "./functions/read-after-write.ts";
import { webhookRelay } from "./functions/webhook-relay.ts";
import { Ledger, MemorySeries, type Row, SecretScanner, trends } from "./invariants.ts";
import { invocationsOf, makePlan, random, type Step } from "./plan.ts";
import { Logs, type RestartKind, startWorld, type World } from "./world.ts";

export interface SoakOptions {
	invocations: number;
	seed: number;
	say(line: string): void;
	/** A fixture bundle built elsewhere, instead of scripts/soak/fixture.ts (see WorldOptions). */
	fixture?: string;
}

export interface SoakResult {
	ledger: Ledger;
	figures: string[];
	/** Every planned invocation ran before the time limit. */
	completed: boolean;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The run's time limit: generous for the plan's size, and a bound whatever happens. */
export const timeLimitMs = (invocations: number) => Math.max(90_000, invocations * 110);

/** Faults after which the invocation's statements must be gone from the server within the grace. */
const TIMEOUT_FAULTS = new Set(["timeout-query", "timeout-http", "timeout-answers"]);

/** After a restart's end, invocations that began this soon after it still count as overlapping it. */
const RESTART_GRACE_MS = 200;

/**
 * Lets every environment finish its current invocation, runs the DB restart while all of them are frozen, and
 * lets them go on. Each environment's next invocation is marked as the first after the restart.
 */
class RestartGate {
	started = 0;
	restarting = false;
	readonly #restarts: number[];
	readonly #restart: () => Promise<void>;
	#active: number;
	#pending: { waiting: number; running: boolean; done: Promise<void>; release(): void } | undefined;

	constructor(active: number, restartsBefore: number[], restart: () => Promise<void>) {
		this.#active = active;
		this.#restarts = [...restartsBefore];
		this.#restart = restart;
	}

	/** Waits for a restart that is due; true when this environment's next invocation is the first after one. */
	async beforeStep(): Promise<boolean> {
		if (!this.#pending && this.#restarts.length > 0 && this.started >= (this.#restarts[0] as number)) {
			this.#restarts.shift();
			let release = () => {};
			const done = new Promise<void>((resolve) => {
				release = resolve;
			});
			this.#pending = { waiting: 0, running: false, done, release };
		}
		const pending = this.#pending;
		this.started++;
		if (!pending) return false;
		pending.waiting++;
		this.#maybeRun();
		await pending.done;
		return true;
	}

	/** An environment has run its whole plan. */
	done() {
		this.#active--;
		this.#maybeRun();
	}

	#maybeRun() {
		const pending = this.#pending;
		if (!pending || pending.running || pending.waiting < this.#active) return;
		pending.running = true;
		this.restarting = true;
		void this.#restart().finally(() => {
			this.restarting = false;
			this.#pending = undefined;
			pending.release();
		});
	}
}

/**
 * The restarts and which invocations they touched: a restart while invocations run touches those it overlaps,
 * and any restart the next invocation of each environment (a warm pool's connections are dead, and a frozen
 * environment learns it only when thawed).
 */
class Restarts {
	readonly windows: Array<{ begin: number; end: number | undefined; kind: "frozen" | "live" }> = [];
	readonly ms: { frozen: number[]; live: number[] } = { frozen: [], live: [] };
	readonly kinds: Record<RestartKind, number> = { graceful: 0, crash: 0 };
	/** Restarts completed, and the kind of the last one. */
	completed = 0;
	lastKind: "frozen" | "live" = "frozen";
	readonly #seen = new Map<FunctionName, number>();

	begin(kind: "frozen" | "live") {
		const window = { begin: performance.now(), end: undefined as number | undefined, kind };
		this.windows.push(window);
		return () => {
			window.end = performance.now();
			this.ms[kind].push(window.end - window.begin);
			this.completed++;
			this.lastKind = kind;
		};
	}

	/** At a step's start: a restart completed since this environment's previous step. */
	firstAfter(fn: FunctionName): boolean {
		const before = this.#seen.get(fn) ?? 0;
		this.#seen.set(fn, this.completed);
		return this.completed > before;
	}

	/** A live restart overlapped [start, end]. */
	overlapped(start: number, end: number): boolean {
		return this.windows.some(
			(window) =>
				window.kind === "live" &&
				window.begin <= end &&
				(window.end ?? Number.POSITIVE_INFINITY) + RESTART_GRACE_MS >= start,
		);
	}
}

/** Codes that name what went wrong: the middlewares', the driver's, the network's. */
const KNOWN_CODE = /^(MIDDY_CONN_|ER_|PROTOCOL_|UND_ERR_|E[A-Z]+$)/;
const KNOWN_NAMES = new Set(["TimeoutError", "SoakFault", "InvalidEvent", "AccountNotFound"]);

/** The code of a failure, as the caller (or a streaming client) saw it; undefined when it has none known. */
const failureCode = (outcome: InvocationOutcome): string | undefined => {
	const answer = outcome.result as
		| { statusCode?: number; body?: unknown; streamed?: { error?: { name: string; code?: string } } }
		| undefined;
	const error = outcome.ok ? answer?.streamed?.error : outcome.error;
	if (!error) {
		return answer?.statusCode === 500
			? "500 (the example's deliberate answer; the cause is in its log)"
			: undefined;
	}
	if (error.code && KNOWN_CODE.test(error.code)) return error.code;
	return KNOWN_NAMES.has(error.name) ? error.name : undefined;
};

const describe = (outcome: InvocationOutcome): string => {
	if (outcome.ok) {
		const result = outcome.result as { statusCode?: number; body?: string; streamed?: unknown } | undefined;
		if (result?.streamed) return `streamed ${JSON.stringify(result.streamed).slice(0, 300)}`;
		return typeof result?.statusCode === "number"
			? `answered ${result.statusCode} ${String(result.body).slice(0, 160)}`
			: `returned ${JSON.stringify(outcome.result)?.slice(0, 160)}`;
	}
	return `${outcome.errorType} ${outcome.error?.name}${outcome.error?.code ? ` (${outcome.error.code})` : ""}: ${outcome.error?.message?.slice(0, 200)}`;
};

/** Runs the soak; what it starts is undone by scripts/cleanup.ts's cleanups (the caller runs them). */
export const runSoak = async (options: SoakOptions): Promise<SoakResult> => {
	const { say } = options;
	const plan = makePlan(options.invocations, options.seed);
	const ledger = new Ledger(say);
	const secrets = new SecretScanner();
	const memory = new MemorySeries();
	const rowOf = new Map<string, Row>();
	const logs = new Logs((fn, line, requestId) => {
		for (const label of secrets.find(line)) {
			ledger.violation("leak", (requestId && rowOf.get(requestId)) || "none", fn, `${label} in a log line`);
		}
	});

	const world: World = await startWorld({ say, logs, fixture: options.fixture });
	for (const [name, user] of Object.entries(world.users))
		secrets.add(`the ${name} DB password`, user.password);
	secrets.add("the partner's bearer token", world.partnerToken);
	secrets.add("the DB admin password", new URL(world.mysql.adminUrl).password);

	const context: SoakContext = {
		ledger,
		admin: () => world.admin(),
		users: world.users,
		partners: world.partners,
		logs,
		statements: { checked: 0, ended: 0, running: 0, leftMs: [] },
		marks: { landed: 0, reported: 0, checked: 0 },
	};
	const balances = new Balances();
	for (const account of ["acct-0", "acct-1", "acct-2", "acct-3", "acct-4", "probe"])
		balances.add(account, 100, true);
	const reader = ledgerReader(context, balances);
	const lmi = ledgerBatch(context, "batch-lmi");
	const drivers: Record<FunctionName, Driver> = {
		"orders-api": ordersApi(context),
		"ledger-writer": ledgerWriter(context, balances),
		"ledger-reader": reader,
		"webhook-relay": webhookRelay(context),
		"export-stream": exportStream(context),
		"ledger-batch": ledgerBatch(context, "ledger-batch"),
		"batch-lmi": lmi,
	};

	const restarts = new Restarts();
	/** Failures of invocations a restart touched, by code. */
	const restartFailures = new Map<string, number>();
	const gate = new RestartGate(FUNCTIONS.length, plan.restartsBefore, async () => {
		const started = performance.now();
		ledger.faults++;
		const end = restarts.begin("frozen");
		try {
			await world.restartDatabase("graceful");
			restarts.kinds.graceful++;
			say(
				`  DB server restarted (${Math.round(performance.now() - started)} ms), every environment frozen meanwhile`,
			);
		} catch (error) {
			ledger.violation("unexpected", "db-restart", "soak", `the DB server did not restart: ${String(error)}`);
		} finally {
			end();
		}
	});

	// Restarts while invocations run: begun when the plan's count of started invocations is reached.
	const liveQueue = [...plan.liveRestarts];
	const liveRuns: Array<Promise<void>> = [];
	let invocationsStarted = 0;
	const restartLive = async (kind: RestartKind) => {
		const started = performance.now();
		ledger.faults++;
		const end = restarts.begin("live");
		try {
			await world.restartDatabase(kind);
			restarts.kinds[kind]++;
			say(
				`  DB server restarted while invocations ran (${kind === "crash" ? "crash: SIGKILL" : "graceful: SIGTERM"}, ${Math.round(performance.now() - started)} ms)`,
			);
		} catch (error) {
			ledger.violation(
				"unexpected",
				"db-restart-live",
				"soak",
				`the DB server did not restart: ${String(error)}`,
			);
		} finally {
			end();
		}
	};
	const invocationsStart = (count: number) => {
		invocationsStarted += count;
		while (liveQueue.length > 0 && invocationsStarted >= (liveQueue[0]?.at ?? 0)) {
			const restart = liveQueue.shift();
			if (restart) liveRuns.push(restartLive(restart.kind));
		}
	};

	const started = performance.now();
	const deadline = started + timeLimitMs(options.invocations);
	let completed = true;
	let finished = 0;
	let nextProgress = Math.max(1, Math.floor(options.invocations / 10));
	let burstRunning = false;

	/** One invocation's run: its row and its restart flag are settled once the invocation is over. */
	const stepRun = (fn: FunctionName, step: Step, token: string, firstAfterRestart: boolean) => {
		const state = { affected: firstAfterRestart, live: firstAfterRestart && restarts.lastKind === "live" };
		const run: StepRun & { settle(start: number, end: number): void } = {
			step,
			token,
			requestId: `soak-${fn}-${token}`,
			next: random(step.seed),
			get row(): Row {
				// A burst's invocation without a fault of its own counts as ordinary traffic here.
				if (step.fault && step.fault !== "concurrent") return step.fault;
				if (state.affected) return state.live ? "db-restart-live" : "db-restart";
				return step.fault ?? (step.probe ? "probe" : "none");
			},
			get afterRestart() {
				return state.affected;
			},
			settle(start: number, end: number) {
				if (restarts.overlapped(start, end)) {
					state.affected = true;
					state.live = true;
				}
			},
		};
		return run;
	};

	/** Classifies an invocation's outcome, checks what its fault promises, and counts it. */
	const reckon = async (
		fn: FunctionName,
		run: StepRun,
		prepared: Prepared,
		outcome: InvocationOutcome,
		returnedAt: number,
	) => {
		const environment = world.environments[fn];
		if (outcome.rss !== undefined && outcome.activeResources !== undefined) {
			memory.sample(fn, environment.pid, { rss: outcome.rss, handles: outcome.activeResources });
		}
		// A timed-out invocation's statements end on the server within the grace (Middy's timeout stops them).
		if (run.step.fault && TIMEOUT_FAULTS.has(run.step.fault)) {
			await checkStatementsEnded(context, run, fn, returnedAt);
			// The time Middy's early timeout left the middlewares (to KILL a statement, to answer).
			if (prepared.timeoutMs !== undefined && outcome.durationMs !== undefined) {
				context.statements.leftMs.push(prepared.timeoutMs - outcome.durationMs);
			}
		}
		const row = run.row;
		rowOf.set(run.requestId, row);
		for (const label of secrets.find(
			`${JSON.stringify(outcome.error ?? null)}${JSON.stringify(outcome.result ?? null)}`,
		)) {
			ledger.violation("leak", row, fn, `${label} in what the caller received`);
		}
		const result = prepared.classify(outcome);
		ledger.invocation(row, result);
		const explained = result !== "unclear" && prepared.expected(outcome, result);
		if (run.afterRestart && result === "clear error" && !failureExpected(run.step.fault)) {
			// A restart's failures carry a code that says what happened (or are orders-api's deliberate 500).
			const code = failureCode(outcome);
			restartFailures.set(code ?? "none", (restartFailures.get(code ?? "none") ?? 0) + 1);
			if (code === undefined) {
				ledger.violation(
					"unexpected",
					row,
					fn,
					`failed during a DB restart without a known code: ${describe(outcome)}`,
				);
			}
		}
		if (result === "unclear") {
			ledger.violation("unexpected", row, fn, `did not fail with a clear error: ${describe(outcome)}`);
		} else if (!(run.afterRestart && result === "clear error") && !explained) {
			ledger.violation(
				"unexpected",
				row,
				fn,
				`${run.step.fault ?? (run.afterRestart ? "a DB restart" : "no fault")}, and yet: ${describe(outcome)}`,
			);
		}
		await prepared.check(outcome);
	};

	const runStep = async (fn: FunctionName, step: Step, afterFrozenRestart: boolean) => {
		const environment = world.environments[fn];
		const token = `${step.index.toString(36)}${(step.seed >>> 0).toString(36).slice(0, 4)}`;
		const firstAfter = restarts.firstAfter(fn) || afterFrozenRestart;
		if (step.fault) ledger.faults++;

		if (step.probe === "memory") {
			const requestId = `soak-${fn}-${token}`;
			rowOf.set(requestId, "probe");
			invocationsStart(1);
			const envelope: Envelope = { soak: { token, probe: "memory" }, event: null };
			const outcome = await environment.invoke<MemoryProbe>(envelope, { requestId });
			ledger.invocation("probe", outcome.ok ? "succeeded" : "unclear");
			if (outcome.ok && outcome.result) memory.heap(fn, environment.pid, outcome.result.heapUsed);
			return;
		}

		if (step.members) {
			await runBurst(fn, step, token, firstAfter);
			return;
		}

		const run = stepRun(fn, step, token, firstAfter);
		rowOf.set(run.requestId, run.row);
		const prepared = await drivers[fn].prepare(run);
		const envelope: Envelope = { soak: prepared.directive, event: prepared.event };
		let settled = false;
		invocationsStart(1);
		const begin = performance.now();
		const invocation = environment
			.invoke(envelope, {
				requestId: run.requestId,
				...(prepared.timeoutMs === undefined ? {} : { timeoutMs: prepared.timeoutMs }),
			})
			.finally(() => {
				settled = true;
			});
		const during = prepared.during?.(() => settled);
		const outcome = await invocation;
		const returnedAt = performance.now();
		run.settle(begin, returnedAt);
		await during;
		await reckon(fn, run, prepared, outcome, returnedAt);
	};

	/** batch-lmi: every invocation of the burst at once, into one environment; then each is reckoned. */
	const runBurst = async (fn: FunctionName, step: Step, token: string, firstAfter: boolean) => {
		const environment = world.environments[fn];
		const members = step.members ?? [];
		const runs = members.map((member, i) => {
			const memberStep: Step = {
				index: step.index,
				fn,
				...(member.fault ? { fault: member.fault } : { fault: "concurrent" as const }),
				seed: member.seed,
			};
			if (member.fault) ledger.faults++;
			return stepRun(fn, memberStep, `${token}-${i}`, firstAfter);
		});
		const prepared: Prepared[] = [];
		for (const run of runs) {
			rowOf.set(run.requestId, run.row);
			prepared.push(await drivers[fn].prepare(run));
		}
		burstRunning = true;
		invocationsStart(runs.length);
		const begin = performance.now();
		const returned: number[] = [];
		let outcomes: InvocationOutcome[];
		try {
			outcomes = await Promise.all(
				runs.map(async (run, i) => {
					const ready = prepared[i] as Prepared;
					let settled = false;
					const invocation = environment
						.invoke({ soak: ready.directive, event: ready.event } satisfies Envelope, {
							requestId: run.requestId,
							...(ready.timeoutMs === undefined ? {} : { timeoutMs: ready.timeoutMs }),
						})
						.finally(() => {
							settled = true;
							returned[i] = performance.now();
						});
					const during = ready.during?.(() => settled);
					const outcome = await invocation;
					await during;
					return outcome;
				}),
			);
		} finally {
			burstRunning = false;
		}
		for (const [i, run] of runs.entries()) {
			run.settle(begin, returned[i] ?? performance.now());
			await reckon(fn, run, prepared[i] as Prepared, outcomes[i] as InvocationOutcome, returned[i] ?? begin);
		}
		await drivers[fn].afterBurst?.(runs);
	};

	const loop = async (fn: FunctionName) => {
		const steps = plan.steps.filter((step) => step.fn === fn);
		try {
			for (const step of steps) {
				if (performance.now() > deadline) {
					completed = false;
					break;
				}
				const afterRestart = await gate.beforeStep();
				await runStep(fn, step, afterRestart);
				finished += invocationsOf(step);
				if (finished >= nextProgress) {
					nextProgress += Math.max(1, Math.floor(options.invocations / 10));
					say(
						`${finished}/${options.invocations} invocations, ${ledger.faults} faults, ${ledger.count("leak")} leaks, ` +
							`${ledger.count("lost")} lost, ${ledger.count("duplicated")} duplicated, ${ledger.count("unexpected")} unexpected, ` +
							`${ledger.count("running")} statements left running`,
					);
				}
			}
		} finally {
			gate.done();
		}
	};

	// Between steps, the pooled reader never holds more connections than its limit (checked after each of its
	// invocations too), nor does batch-lmi's pool while no burst runs.
	let sampling = true;
	const sampler = (async () => {
		while (sampling) {
			await sleep(200);
			if (!sampling || gate.restarting || world.restarting) continue;
			await reader.checkPool("none").catch(() => {});
			if (!burstRunning) await lmi.checkPool("concurrent").catch(() => {});
		}
	})();

	say(
		`running ${options.invocations} invocations (seed ${options.seed}): ${plan.steps.filter((s) => s.fault && !s.members).length} with a fault, ` +
			`${plan.steps.filter((s) => s.members).length} bursts of invocations at once, ` +
			`${plan.restartsBefore.length} DB restart(s) with every environment frozen and ${plan.liveRestarts.length} while invocations run; ` +
			`time limit ${Math.round(timeLimitMs(options.invocations) / 1000)} s`,
	);
	try {
		await Promise.all(FUNCTIONS.map((fn) => loop(fn)));
	} finally {
		sampling = false;
		await sampler;
		await Promise.all(liveRuns);
	}
	if (!completed) {
		ledger.violation(
			"unexpected",
			"none",
			"soak",
			`time limit reached after ${finished} of ${options.invocations} invocations`,
		);
	}
	for (const restart of liveQueue) {
		ledger.violation(
			"unexpected",
			"db-restart-live",
			"soak",
			`the live restart planned at invocation ${restart.at} never began`,
		);
	}

	// The environments end as Lambda reclaims them; their last log lines arrive, then everything is reckoned.
	const environmentStats = FUNCTIONS.map((fn) => ({ fn, ...world.environments[fn].stats }));
	await Promise.all(FUNCTIONS.map((fn) => world.environments[fn].kill()));
	await sleep(300);
	for (const fn of FUNCTIONS) await drivers[fn].reconcile();

	const figures: string[] = [];
	for (const fn of FUNCTIONS) figures.push(...drivers[fn].figures());
	figures.push(
		`environments: ${environmentStats
			.map(
				(s) =>
					`${s.fn} ${s.invocations} invocations, ${s.coldStarts} cold start(s), ${s.crashes} crashes, ${s.timeouts} Lambda timeouts` +
					("peakConcurrency" in s ? `, at most ${s.peakConcurrency} at once` : ""),
			)
			.join("; ")}`,
	);
	const most = (values: number[]) =>
		values.length > 0 ? `${Math.round(Math.max(...values))} ms at most` : "";
	figures.push(
		`DB restarts: ${restarts.ms.frozen.length} with every environment frozen (${most(restarts.ms.frozen)}), ` +
			`${restarts.ms.live.length} while invocations ran (${restarts.kinds.crash} crashes, ${restarts.kinds.graceful - restarts.ms.frozen.length} graceful; ${most(restarts.ms.live)})`,
	);
	figures.push(
		`invocations a DB restart touched that failed, by code: ${
			[...restartFailures]
				.sort((a, b) => b[1] - a[1])
				.map(([code, count]) => `${code} ×${count}`)
				.join(", ") || "none"
		}`,
	);
	const left = [...context.statements.leftMs].sort((a, b) => a - b);
	figures.push(
		`timed-out invocations' statements: ${context.statements.checked} timeouts checked, ${context.statements.ended} with every statement gone from the server within ${1000} ms, ` +
			`${context.statements.running} statement(s) still running after it` +
			(left.length > 0
				? `; the invocations of the timeout faults returned with ${Math.round(left[0] as number)} ms of their function's time left at least (median ${Math.round(left[Math.floor(left.length / 2)] as number)} ms; timeoutEarlyInMillis: 250)`
				: ""),
	);
	figures.push(
		`early responses with a DB write handed to waitUntil: ${context.marks.landed}/${context.marks.checked} marker rows landed before the invocation returned, ${context.marks.reported} reported failed`,
	);
	for (const trend of trends(memory)) {
		const heaps = trend.heapsMb;
		figures.push(
			`${trend.process}: RSS ${trend.rssMb.join(" → ")} MB (quarters 2 to 4), active handles at most ${trend.handles.join(" → ")}` +
				(heaps.length > 0
					? `, heap after GC ${heaps[0]} → ${heaps[heaps.length - 1]} MB (${heaps.length} probes, ${Math.min(...heaps)} to ${Math.max(...heaps)})`
					: "") +
				` over ${trend.samples} invocations`,
		);
		for (const what of trend.growing) {
			ledger.violation("leak", "none", "soak", `${trend.process}: ${what} kept growing`);
		}
	}
	figures.push(
		`secrets: ${secrets.scanned} log lines and answers searched for the DB passwords and the partner's token`,
	);
	return { ledger, figures, completed };
};
