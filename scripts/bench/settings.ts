// How long each comparison runs, full and quick, in one place. Full: a few minutes in all on 2 cores, with
// thousands of samples per contender. Quick (CI): every code path once or a few times, no timing value.
import type { ComparisonSpec } from "./runner.ts";

export type Pace = Pick<ComparisonSpec, "batch" | "warmup" | "minRounds" | "maxRounds" | "budgetMs">;

export interface Mode {
	quick: boolean;
	log: (line: string) => void;
}

/** Pace for a comparison whose invocations take `typical` (roughly; it sizes the batch). */
export const pace = (mode: Mode, full: { budgetMs: number; batch: number; warmup?: number }): Pace =>
	mode.quick
		? {
				batch: Math.max(2, Math.ceil(full.batch / 5)),
				warmup: 3,
				minRounds: 2,
				maxRounds: 200,
				budgetMs: 800,
			}
		: {
				batch: full.batch,
				warmup: full.warmup ?? full.batch * 2,
				minRounds: 20,
				maxRounds: 100_000,
				budgetMs: full.budgetMs,
			};

/**
 * Memory group: the issue compares 100 warm invocations with 10,000. Readings every 1,000 as well, for a slope
 * fitted once warm (a single late reading moves with whatever happened to be allocated last).
 */
export const memoryPlan = (mode: Mode) =>
	mode.quick
		? { early: 100, warm: 200, total: 1000, checkpoints: [100, 200, 400, 600, 800, 1000] }
		: {
				early: 100,
				warm: 1000,
				total: 10_000,
				checkpoints: [100, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10_000],
			};

/** Cold-start group: spawns per variant (interleaved). */
export const coldStartRounds = (mode: Mode) => (mode.quick ? 2 : 12);
