// TLS settings a user passes through to a driver (mysql2's `ssl`, undici's `connect`): the option names Node
// accepts, so that a typo is an error rather than a setting silently lost, and the one warning when certificate
// verification is switched off.
import type { Logger } from "./logger.ts";

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
	"minVersion",
	"maxVersion",
	"ciphers",
	"ecdhCurve",
	"sigalgs",
	"honorCipherOrder",
	"secureOptions",
	"secureProtocol",
	"secureContext",
	"session",
	"ALPNProtocols",
	"requestOCSP",
	"pskCallback",
	"enableTrace",
	"privateKeyEngine",
	"privateKeyIdentifier",
];

/**
 * A check to call with each TLS settings object a middleware meets (at cold start, or at the first connect for
 * settings that come later): it warns once, through `logger`, when they switch certificate verification off.
 * Verification is never lost silently. `option` names where the settings are (`ssl`, `connect`), and `instead`
 * says how to trust a private CA the right way.
 */
export const unverifiedTlsWarning = (
	logger: Logger,
	pkg: string,
	option: string,
	instead: string,
): ((tls: unknown) => void) => {
	let warned = false;
	return (tls) => {
		if (warned || (tls as { rejectUnauthorized?: unknown } | null | undefined)?.rejectUnauthorized !== false)
			return;
		warned = true;
		logger.warn(
			`${pkg}: ${option}.rejectUnauthorized is false: TLS certificates are NOT verified. ${instead}`,
		);
	};
};
