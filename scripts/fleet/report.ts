// The fleet simulation's report: the same figures for the terminal (aligned text) and for docs/connection-budget.md (a
// Markdown section between two markers, replaced on each full run; the rest of the file is written by hand).
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { CONTENDER_LABELS, type ContenderResult, type FleetRun } from "./run.ts";

export const DOC_START = "<!-- fleet:generated:start -->";
export const DOC_END = "<!-- fleet:generated:end -->";

const ms = (value: number) => (Number.isNaN(value) ? "-" : `${Math.round(value)} ms`);

/** What was simulated, in a few sentences a newcomer can follow. */
export const summary = (run: FleetRun): string[] => {
	const { settings } = run;
	return [
		`${settings.environments} Lambda execution environments of one function (separate Node processes, frozen with SIGSTOP`,
		`between invocations, as Lambda freezes them) share one MySQL server that accepts only ${settings.appConnections} connections from`,
		`the function's database user. ${settings.bursts} times, ${
			settings.burstSize >= settings.environments
				? "every environment is invoked at once (a burst)"
				: `${settings.burstSize} of the environments are invoked at once (a burst; the next ${settings.burstSize} each time, taking turns, the others staying frozen)`
		}, then all of them stay`,
		`frozen for ${settings.pauseMs} ms. Each invocation does one short unit of work on its own counter row: START TRANSACTION,`,
		`SELECT ... FOR UPDATE, ${settings.workMs} ms of work with the connection held, UPDATE, COMMIT. Each way of connecting runs in fresh`,
		"environments, one after the other, against the same server, with a database user of its own.",
	];
};

export const settingsLine = (run: FleetRun): string => {
	const { settings } = run;
	return (
		`${settings.environments} environments, ${settings.bursts} bursts${settings.burstSize < settings.environments ? ` of ${settings.burstSize}` : ""}, pause ${settings.pauseMs} ms, work ${settings.workMs} ms, ` +
		`function timeout ${settings.timeoutMs / 1000} s (Middy's early timeout 250 ms before it); ` +
		`${run.serverVersion}: max_connections = ${run.maxConnections}, of which ${run.driverConnections} are this driver's own root connections ` +
		`(admin, sampler${run.ballast > 0 ? `, ${run.ballast} idle ballast: MariaDB's floor is 10` : ""}), ` +
		`leaving the app user ${run.measuredAppCapacity} (measured: the next connect was refused with ER_CON_COUNT_ERROR); ` +
		`middleware options present: connectRetry ${run.features.connectRetry ? "yes" : "no"}, serverPressure ${run.features.serverPressure ? "yes" : "no"}`
	);
};

const HEADERS = [
	"contender",
	"ok",
	"failed",
	"peak conns (server / sampled / sessions)",
	"held while frozen",
	"connect retries",
	"p50",
	"p99",
	"rows committed",
] as const;

const row = (result: ContenderResult): string[] => {
	const { label } = CONTENDER_LABELS[result.key];
	if (result.skipped) return [label, "-", "-", "-", "-", "-", "-", "-", `skipped: ${result.skipped}`];
	const failed = Object.entries(result.failures)
		.sort(([, a], [, b]) => b.count - a.count)
		.map(([code, { count }]) => `${count} ${code}`)
		.join(", ");
	return [
		label,
		`${result.succeeded}/${result.invocations}`,
		failed || "0",
		`${result.peakServer} / ${result.peakSampled} / ${result.peakSessions}`,
		result.heldWhileFrozen.length ? String(Math.max(...result.heldWhileFrozen)) : "-",
		String(result.connectRetries),
		ms(result.latencyP50),
		ms(result.latencyP99),
		String(result.committed),
	];
};

export const textTable = (run: FleetRun): string[] => {
	const rows = [HEADERS as readonly string[], ...run.results.map(row)];
	const widths = HEADERS.map((_, column) => Math.max(...rows.map((cells) => (cells[column] ?? "").length)));
	const line = (cells: readonly string[]) =>
		`  ${cells.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join("  ")}`.trimEnd();
	return [
		line(rows[0] as readonly string[]),
		line(widths.map((w) => "-".repeat(w))),
		...rows.slice(1).map(line),
	];
};

export const markdownTable = (run: FleetRun): string[] => [
	`| ${HEADERS.join(" | ")} |`,
	`| ${HEADERS.map((_, column) => (column === 0 || column === 2 ? "---" : "---:")).join(" | ")} |`,
	...run.results.map((result) => `| ${row(result).join(" | ")} |`),
];

/** How to read the table's columns. */
export const legend = (run: FleetRun): string[] => [
	`peak conns: the server's high-water mark (Max_used_connections, reset by FLUSH STATUS before each contender) / the largest Threads_connected sampled every 20 ms, both minus the driver's ${run.driverConnections}; both count a connect the server is about to refuse, so they can pass the app's ${run.measuredAppCapacity} / the most sessions of the contender's user sampled at once (PROCESSLIST every 20 ms, leaving out connects still in their login, which the server may yet refuse).`,
	`held while frozen: the most connections the contender's user had open at the end of a pause, every environment frozen (information_schema.PROCESSLIST; per burst below).`,
	"connect retries: connects refused by the full server and tried again, summed from each invocation's stats (the middleware's onStats `connectRetries`; serverless-mysql's onRetry).",
	"p50/p99: invocation latency as the driver sees it (thaw, IPC, handler; the first burst includes the cold starts).",
	"rows committed: the contender's counters summed; each successful invocation adds exactly one.",
];

/** Per contender: failures with a sample message, stats fields, per-burst holdings, other log lines. */
export const details = (run: FleetRun): string[] => {
	const lines: string[] = [];
	for (const result of run.results) {
		if (result.skipped) continue;
		const { label, setup } = CONTENDER_LABELS[result.key];
		lines.push(`${label}: ${setup}`);
		for (const [code, failure] of Object.entries(result.failures)) {
			const sample = failure.sample.length > 200 ? `${failure.sample.slice(0, 200)}…` : failure.sample;
			lines.push(`  - ${failure.count} × ${code}: "${sample}"`);
		}
		lines.push(
			`  - held while frozen, per burst: ${result.heldWhileFrozen.join(", ")}; after its environments were killed: ${result.leaked}`,
		);
		const surplus = result.committed - result.succeeded;
		if (surplus > 0) {
			lines.push(
				`  - ${surplus} row(s) committed by invocations that failed as the caller saw them: a handler still running after its invocation ended (Middy's early timeout does not stop it) went on when its environment was thawed`,
			);
		} else if (surplus < 0) {
			lines.push(`  - ${-surplus} invocation(s) succeeded without their row committed`);
		}
		const silent = result.invocations - result.statsLines;
		if (silent > 0) {
			lines.push(
				`  - ${silent} invocation(s) printed no stats: their handler had not finished when they ended, nor before the environment was killed`,
			);
		}
		if (result.environmentsLost > 0) {
			lines.push(
				`  - ${result.environmentsLost} environment(s) ended by a timeout or a crash (then cold-started again)`,
			);
		}
		lines.push(
			`  - stats (${result.statsLines}/${result.invocations} invocations reported): ${result.statsFields.join("; ") || "none"}`,
		);
		if (result.otherLogs.count > 0) {
			lines.push(`  - ${result.otherLogs.count} other log line(s), e.g.:`);
			for (const sample of result.otherLogs.samples) lines.push(`      | ${sample}`);
		}
		lines.push(`  - ${(result.elapsedMs / 1000).toFixed(1)} s`);
	}
	return lines;
};

export interface GoalCheck {
	/** False when the run's settings are not the goal's (a quick run, a burst outside 2–3×): nothing is asserted. */
	checked: boolean;
	met: boolean;
	line: string;
}

/**
 * Issue 11's goal for scoped mode: a burst of 2–3× the connections the server gives the function's user completes
 * with 0 failed invocations, whenever the burst's work fits in the function timeout, and each invocation commits
 * exactly its one row. Checked in full runs only: --quick (CI) asserts no contender's outcome.
 */
export const scopedGoal = (run: FleetRun): GoalCheck => {
	const { settings } = run;
	const size = Math.min(settings.burstSize, settings.environments);
	const ratio = size / run.measuredAppCapacity;
	const burst = `a burst of ${size} environments, ${ratio.toFixed(1)}× the app's ${run.measuredAppCapacity} connections`;
	// The burst's work, served connection by connection: rounds of workMs each, far below the timeout at 2–3×.
	const rounds = Math.ceil(ratio);
	const fits = rounds * settings.workMs < settings.timeoutMs - 250;
	if (settings.quick || ratio < 2 || ratio > 3 || !fits) {
		const why = settings.quick
			? "a quick run checks that the simulation runs, not outcomes"
			: !fits
				? "the burst's work does not fit in the function timeout"
				: "the goal is stated for a burst of 2–3× the server's connections";
		return { checked: false, met: false, line: `goal not checked (${burst}): ${why}` };
	}
	const scoped = run.results.find((result) => result.key === "scoped");
	if (!scoped || scoped.skipped || scoped.invocations === 0) {
		return { checked: true, met: false, line: `✗ goal: scoped mode did not run (${burst})` };
	}
	const failed = scoped.invocations - scoped.succeeded;
	const met = failed === 0 && scoped.committed === scoped.invocations;
	const outcome = `${scoped.succeeded}/${scoped.invocations} invocations served, ${failed} failed, ${scoped.committed} rows committed for ${scoped.invocations} invocations`;
	return {
		checked: true,
		met,
		line: `${met ? "✓" : "✗"} goal (issue 11): scoped mode serves ${burst}, with 0 failed invocations and one row committed each: ${outcome}`,
	};
};

/** Replaces the generated section of docs/connection-budget.md (or writes the file, with the section only, if absent). */
export const writeDoc = (run: FleetRun, path: string, command: string): void => {
	const section = [
		DOC_START,
		"<!-- Generated by `pnpm fleet` (scripts/fleet.ts). Do not edit by hand between these markers: run `pnpm fleet`. -->",
		"",
		`Measured on ${new Date().toISOString().slice(0, 10)}, code ${run.codeVersion}; command \`${command}\`, ${(run.elapsedMs / 1000).toFixed(0)} s.`,
		"",
		summary(run).join(" "),
		"",
		`Settings: ${settingsLine(run)}.`,
		"",
		...markdownTable(run),
		"",
		scopedGoal(run).line,
		"",
		...legend(run).map((line) => `- ${line}`),
		"",
		"Per contender:",
		"",
		"```text",
		...details(run),
		"```",
		DOC_END,
	].join("\n");
	const current = existsSync(path) ? readFileSync(path, "utf8") : "";
	const start = current.indexOf(DOC_START);
	const end = current.indexOf(DOC_END);
	const next =
		start >= 0 && end > start
			? `${current.slice(0, start)}${section}${current.slice(end + DOC_END.length)}`
			: `${current ? `${current.trimEnd()}\n\n` : "# Fleet simulation\n\n"}${section}\n`;
	writeFileSync(path, next);
};
