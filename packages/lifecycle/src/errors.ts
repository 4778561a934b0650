// Errors that keep the driver's `code` and the original error as `cause`, and never carry a secret.

export interface MiddyConnErrorOptions {
	/** The package that raised it, as Middy's own errors do (`cause.package`). */
	package: string;
	/** A stable, documented code; when absent the cause's `code` is kept. */
	code?: string | undefined;
	cause?: unknown;
	/** Extra enumerable fields (never secrets). */
	details?: Record<string, unknown>;
	/** Strings that must not appear in the message, the stack or any field. */
	secrets?: ReadonlyArray<string | undefined | null>;
}

/** An error's `code`, when it has a string one (Node's, a driver's, ours). */
export const codeOf = (error: unknown): string | undefined => {
	const code = (error as { code?: unknown } | null | undefined)?.code;
	return typeof code === "string" ? code : undefined;
};

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** Replaces every occurrence of each secret (and its URL-encoded form) with `***`. */
export const redact = (text: string, secrets: ReadonlyArray<string | undefined | null> = []): string => {
	let out = text;
	for (const secret of secrets) {
		if (!secret || secret.length < 3) continue;
		for (const form of new Set([secret, encodeURIComponent(secret)])) {
			out = out.replace(new RegExp(escapeRegExp(form), "g"), "***");
		}
	}
	return out;
};

/**
 * Redacts secrets from an error in place: message, stack and string fields, following `cause` chains. Drivers
 * sometimes echo what they were given (a URL with a password, a config object); this makes sure none of it
 * survives into logs, stacks or `JSON.stringify(err)`.
 */
export const redactError = <T>(error: T, secrets: ReadonlyArray<string | undefined | null>, depth = 0): T => {
	if (depth > 5 || error === null || typeof error !== "object" || secrets.every((s) => !s)) return error;
	const record = error as Record<string, unknown>;
	for (const key of Object.getOwnPropertyNames(record)) {
		const value = record[key];
		try {
			if (typeof value === "string") record[key] = redact(value, secrets);
			else if (key === "cause" || value instanceof Error) redactError(value, secrets, depth + 1);
			else if (key === "config" || key === "options") delete record[key];
		} catch {
			// frozen or accessor fields: leave them
		}
	}
	return error;
};

/** A middy-conn error: `code` kept from the driver (or given), the driver's error as `cause`, secrets redacted. */
export class MiddyConnError extends Error {
	readonly code: string | undefined;
	readonly package: string;

	constructor(message: string, options: MiddyConnErrorOptions) {
		const secrets = options.secrets ?? [];
		super(redact(message, secrets), { cause: redactError(options.cause, secrets) });
		this.name = "MiddyConnError";
		this.package = options.package;
		this.code = options.code ?? codeOf(options.cause);
		if (options.details) Object.assign(this, options.details);
		// Reading `stack` formats it (prepareStackTrace): pay for that only when there is a secret to redact.
		if (secrets.some((secret) => secret && secret.length >= 3) && this.stack) {
			this.stack = redact(this.stack, secrets);
		}
	}
}
