// The soak's report: the injected faults against their outcomes, the invariants as figures, and the last line.
import { FAULTS } from "./directive.ts";
import { type Ledger, NOTED, type NotedKind, type Row, type RowCounts } from "./invariants.ts";

const ROW_LABELS: Record<Row, string> = {
	none: "no fault (ordinary traffic)",
	probe: "probes (state, memory)",
	...FAULTS,
	"db-restart": "the DB server restarts, every environment frozen (first invocations after)",
	"db-restart-live":
		"the DB server restarts while invocations run (those it overlapped, and the first after)",
};

const COLUMNS: Array<[string, (counts: RowCounts) => number]> = [
	["invocations", (c) => c.invocations],
	["succeeded", (c) => c.succeeded],
	["4xx", (c) => c.answered4xx],
	["clear error", (c) => c.clearError],
	["delivered", (c) => c.delivered],
	["reported failed", (c) => c.reportedFailed],
	["leaks", (c) => c.leak],
	["lost", (c) => c.lost],
	["dup", (c) => c.duplicated],
	["unexpected", (c) => c.unexpected],
	["running > 1 s", (c) => c.running],
];

/** The table of faults against outcomes, as lines (Markdown, so that docs/reliability.md can hold it as is). */
export const faultTable = (ledger: Ledger): string[] => {
	const order: Row[] = ["none", ...(Object.keys(FAULTS) as Row[]), "probe"];
	const rows = order.filter((row) => ledger.rows.has(row));
	const labelWidth = Math.max(...rows.map((row) => ROW_LABELS[row].length), "fault".length);
	const widths = COLUMNS.map(([name]) => Math.max(name.length, 5));
	const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
	const out = [
		line(["fault".padEnd(labelWidth), ...COLUMNS.map(([name], i) => name.padStart(widths[i] as number))]),
		line(["-".repeat(labelWidth), ...widths.map((width) => `${"-".repeat(width - 1)}:`)]),
	];
	for (const row of rows) {
		const counts = ledger.rows.get(row) as RowCounts;
		out.push(
			line([
				ROW_LABELS[row].padEnd(labelWidth),
				...COLUMNS.map(([, value], i) => String(value(counts)).padStart(widths[i] as number)),
			]),
		);
	}
	return out;
};

/** The last line, exactly as the issue asks for it. */
export const lastLine = (ledger: Ledger): string =>
	`${ledger.invocations} invocations, ${ledger.faults} faults, ${ledger.count("leak")} leaks, ${ledger.count("lost")} lost, ${ledger.count("duplicated")} duplicated`;

/**
 * Every violation, grouped by kind, row and function: how many, and the first one's message (the run prints only
 * the first violations as they happen).
 */
export const violationGroups = (ledger: Ledger): string[] => {
	const groups = new Map<string, { count: number; first: string }>();
	for (const violation of ledger.violations) {
		const key = `${violation.kind} · ${ROW_LABELS[violation.row]} · ${violation.fn}`;
		const group = groups.get(key);
		if (group) group.count++;
		else groups.set(key, { count: 1, first: violation.message });
	}
	return [...groups].map(([key, { count, first }]) => `${count} × ${key}: first: ${first}`);
};

/**
 * The documented outcomes (NOTED), one line each, always printed (0 included): how many, by function and fault,
 * and the first one's message. They do not fail the run.
 */
export const notedLines = (ledger: Ledger): string[] =>
	(Object.keys(NOTED) as NotedKind[]).map((kind) => {
		const noted = ledger.noted.filter((entry) => entry.kind === kind);
		const where = new Map<string, number>();
		for (const entry of noted) {
			const key = `${entry.fn}, ${ROW_LABELS[entry.row]}`;
			where.set(key, (where.get(key) ?? 0) + 1);
		}
		const detail = [...where].map(([key, count]) => `${key}: ${count}`).join("; ");
		return `${NOTED[kind]}: ${noted.length}${detail ? ` (${detail}; first: ${noted[0]?.message})` : ""}`;
	});
