// The soak itself: the plan's steps, run by four execution environments side by side (each one invocation at a
// time, frozen in between, as four Lambda instances would be), the DB restarts with every environment frozen, the
// checks after each step and a sampler in between, and the reckoning at the end.
import type { InvocationOutcome } from "../../packages/test-harness/src/execution-environment.ts";
import { type Envelope, FUNCTIONS, type FunctionName, type MemoryProbe } from "./directive.ts";
import type { Driver, SoakContext } from "./functions/common.ts";
import { ordersApi } from "./functions/orders-api.ts";
import { Balances, ledgerReader, ledgerWriter } from "./functions/read-after-write.ts";
import { webhookRelay } from "./functions/webhook-relay.ts";
import { Ledger, MemorySeries, type Row, SecretScanner, trends } from "./invariants.ts";
import { makePlan, random, type Step } from "./plan.ts";
import { type Cleanup, Logs, startWorld, type World } from "./world.ts";

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

const describe = (outcome: InvocationOutcome): string => {
	if (outcome.ok) {
		const result = outcome.result as { statusCode?: number; body?: string } | undefined;
		return typeof result?.statusCode === "number"
			? `answered ${result.statusCode} ${String(result.body).slice(0, 160)}`
			: `returned ${JSON.stringify(outcome.result)?.slice(0, 160)}`;
	}
	return `${outcome.errorType} ${outcome.error?.name}: ${outcome.error?.message?.slice(0, 200)}`;
};

export const runSoak = async (options: SoakOptions, cleanups: Cleanup[]): Promise<SoakResult> => {
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

	const world: World = await startWorld({ say, cleanups, logs, fixture: options.fixture });
	secrets.add("the orders DB password", world.users.orders.password);
	secrets.add("the writer DB password", world.users.writer.password);
	secrets.add("the reader DB password", world.users.reader.password);
	secrets.add("the partner's bearer token", world.partnerToken);
	secrets.add("the DB admin password", new URL(world.mysql.adminUrl).password);

	const context: SoakContext = {
		ledger,
		admin: () => world.admin(),
		users: world.users,
		partners: world.partners,
		logs,
	};
	const balances = new Balances();
	for (const account of ["acct-0", "acct-1", "acct-2", "acct-3", "acct-4", "probe"])
		balances.add(account, 100, true);
	const reader = ledgerReader(context, balances);
	const drivers: Record<FunctionName, Driver> = {
		"orders-api": ordersApi(context),
		"ledger-writer": ledgerWriter(context, balances),
		"ledger-reader": reader,
		"webhook-relay": webhookRelay(context),
	};

	const restarts = { done: 0, ms: [] as number[] };
	const gate = new RestartGate(FUNCTIONS.length, plan.restartsBefore, async () => {
		const started = performance.now();
		ledger.faults++;
		try {
			await world.restartDatabase();
			restarts.done++;
			restarts.ms.push(performance.now() - started);
			say(
				`  DB server restarted (${Math.round(performance.now() - started)} ms), every environment frozen meanwhile`,
			);
		} catch (error) {
			ledger.violation("unexpected", "db-restart", "soak", `the DB server did not restart: ${String(error)}`);
		}
	});

	const started = performance.now();
	const deadline = started + timeLimitMs(options.invocations);
	let completed = true;
	let finished = 0;
	let nextProgress = Math.max(1, Math.floor(options.invocations / 10));

	const runStep = async (fn: FunctionName, step: Step, afterRestart: boolean) => {
		const environment = world.environments[fn];
		const token = `${step.index.toString(36)}${(step.seed >>> 0).toString(36).slice(0, 4)}`;
		const requestId = `soak-${fn}-${token}`;
		const row: Row = step.fault ?? (afterRestart ? "db-restart" : step.probe ? "probe" : "none");
		rowOf.set(requestId, row);
		if (step.fault) ledger.faults++;

		if (step.probe === "memory") {
			const envelope: Envelope = { soak: { token, probe: "memory" }, event: null };
			const outcome = await environment.invoke<MemoryProbe>(envelope, { requestId });
			ledger.invocation("probe", outcome.ok ? "succeeded" : "unclear");
			if (outcome.ok && outcome.result) memory.heap(fn, environment.pid, outcome.result.heapUsed);
			return;
		}

		const prepared = await drivers[fn].prepare({
			step,
			row,
			token,
			requestId,
			next: random(step.seed),
			afterRestart,
		});
		const envelope: Envelope = { soak: prepared.directive, event: prepared.event };
		let settled = false;
		const invocation = environment
			.invoke(envelope, {
				requestId,
				...(prepared.timeoutMs === undefined ? {} : { timeoutMs: prepared.timeoutMs }),
			})
			.finally(() => {
				settled = true;
			});
		const during = prepared.during?.(() => settled);
		const outcome = await invocation;
		await during;
		if (outcome.rss !== undefined && outcome.activeResources !== undefined) {
			memory.sample(fn, environment.pid, { rss: outcome.rss, handles: outcome.activeResources });
		}
		for (const label of secrets.find(
			`${JSON.stringify(outcome.error ?? null)}${JSON.stringify(outcome.result ?? null)}`,
		)) {
			ledger.violation("leak", row, fn, `${label} in what the caller received`);
		}
		const result = prepared.classify(outcome);
		ledger.invocation(row, result);
		if (result === "unclear") {
			ledger.violation("unexpected", row, fn, `did not fail with a clear error: ${describe(outcome)}`);
		} else if (!prepared.expected(outcome, result)) {
			ledger.violation("unexpected", row, fn, `${step.fault ?? "no fault"}, and yet: ${describe(outcome)}`);
		}
		await prepared.check(outcome);
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
				finished++;
				if (finished >= nextProgress) {
					nextProgress += Math.max(1, Math.floor(options.invocations / 10));
					say(
						`${finished}/${options.invocations} invocations, ${ledger.faults} faults, ${ledger.count("leak")} leaks, ` +
							`${ledger.count("lost")} lost, ${ledger.count("duplicated")} duplicated, ${ledger.count("unexpected")} unexpected`,
					);
				}
			}
		} finally {
			gate.done();
		}
	};

	// Between steps, the pooled reader never holds more connections than its limit (checked after each of its
	// invocations too).
	let sampling = true;
	const sampler = (async () => {
		while (sampling) {
			await sleep(200);
			if (sampling && !gate.restarting) await reader.checkPool("none").catch(() => {});
		}
	})();

	say(
		`running ${options.invocations} invocations (seed ${options.seed}): ${plan.steps.filter((s) => s.fault).length} with a fault, ` +
			`${plan.restartsBefore.length} DB restart(s); time limit ${Math.round(timeLimitMs(options.invocations) / 1000)} s`,
	);
	try {
		await Promise.all(FUNCTIONS.map((fn) => loop(fn)));
	} finally {
		sampling = false;
		await sampler;
	}
	if (!completed) {
		ledger.violation(
			"unexpected",
			"none",
			"soak",
			`time limit reached after ${finished} of ${options.invocations} invocations`,
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
		`environments: ${environmentStats.map((s) => `${s.fn} ${s.invocations} invocations, ${s.coldStarts} cold start(s), ${s.crashes} crashes, ${s.timeouts} Lambda timeouts`).join("; ")}`,
	);
	if (restarts.ms.length > 0) {
		figures.push(`DB restarts: ${restarts.done}, ${Math.round(Math.max(...restarts.ms))} ms at most`);
	}
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
