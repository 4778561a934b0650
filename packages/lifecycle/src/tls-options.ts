// TLS settings a user passes through to a driver (mysql2's `ssl`, undici's `connect`): the option names Node
// accepts, so that a typo is an error rather than a setting silently lost, and the one warning when certificate
// verification is switched off.
import type { Logger } from "./logger.ts";
import { closestName } from "./option-rules.ts";

/**
 * Option names of tls.connect and tls.createSecureContext: an unknown key there is a typo (`rejectUnauthorised`),
 * and a silent typo is how verification gets lost.
 */
export const tlsOptionNames: readonly string[] = [
	"ca",
	"cert",
	"key",
	"pfx",
	"passphrase",
	"crl",
	"servername",
	"rejectUnauthorized",
	"checkServerIdentity",
	"allowPartialTrustChain",
	"minDHSize",
	"minVersion",
	"maxVersion",
	"ciphers",
	"ecdhCurve",
	"dhparam",
	"sigalgs",
	"honorCipherOrder",
	"secureOptions",
	"secureProtocol",
	"secureContext",
	"session",
	"sessionIdContext",
	"sessionTimeout",
	"ticketKeys",
	"ALPNProtocols",
	"requestOCSP",
	"pskCallback",
	"enableTrace",
	"privateKeyEngine",
	"privateKeyIdentifier",
	"clientCertEngine",
];

export interface TlsSettingsCheck {
	/** Where the settings are, in messages (`ssl`, `connect`). */
	readonly option: string;
	/** How to trust a private CA the right way, said when verification is off. */
	readonly instead: string;
	/** Keys the driver itself reads, beyond Node's tls options (undici's connector and net options). */
	readonly driverKeys?: readonly string[];
}

/**
 * A check to call with each TLS settings object a middleware meets (at cold start, or at the first connect for
 * settings that come later). It warns once, through `logger`, when they switch certificate verification off:
 * verification is never lost silently. And it warns once for each key that neither Node's tls nor the driver
 * knows (a typo: `rejectUnauthorised`), naming the closest known key; a warning, not an error, since the settings
 * go to Node as they are, and a newer Node may know a key this list does not.
 */
export const tlsSettingsCheck = (
	logger: Logger,
	pkg: string,
	{ option, instead, driverKeys = [] }: TlsSettingsCheck,
): ((tls: unknown) => void) => {
	const known = [...tlsOptionNames, ...driverKeys];
	const warned = new Set<string>();
	const once = (key: string, message: string) => {
		if (warned.has(key)) return;
		warned.add(key);
		logger.warn(`${pkg}: ${message}`);
	};
	return (tls) => {
		if (tls === null || typeof tls !== "object") return;
		for (const key of Object.keys(tls)) {
			if (known.includes(key)) continue;
			const meant = closestName(key, known);
			once(
				key,
				`'${option}.${key}' is not an option Node's tls knows${meant ? ` (did you mean '${meant}'?)` : ""}; it is passed on as it is`,
			);
		}
		if ((tls as { rejectUnauthorized?: unknown }).rejectUnauthorized === false) {
			once(
				"rejectUnauthorized",
				`${option}.rejectUnauthorized is false: TLS certificates are NOT verified. ${instead}`,
			);
		}
	};
};
