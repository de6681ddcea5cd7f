// @ts-check
/**
 * Tollgate's JavaScript SDK: the region's HTTP/JSON check API with failover
 * (`Client`), an in-process replica that follows a region's watch stream and
 * answers checks locally (`Replica`), and offline license verification
 * (`LicenseVerifier`). No dependencies: Node >= 20 only.
 */

export {
  Client, newIdempotencyKey, BATCH_CHECKS_MAX, CONSUME_MAX, TIMEOUT_MS_DEFAULT, ENDPOINTS_MAX,
} from './client.js';
export {
  Replica, RECONNECT_BACKOFF_MIN_MS_DEFAULT, RECONNECT_BACKOFF_MAX_MS_DEFAULT,
  IDLE_TIMEOUT_MS_DEFAULT, OBJECTS_MAX_DEFAULT,
} from './replica.js';
export {
  LicenseVerifier, revocationList, licenseAllows, parseRfc3339, keyIdOf,
  DEFAULT_LEEWAY_SECONDS, ISSUER_ORIGIN, ISSUER_REGION_PREFIX,
} from './license.js';
export {
  decodeToken, footerUnverified, verifyToken, signToken, pae, makePublicKey, publicKeyOfSeed,
  TOKEN_BYTES_MAX,
} from './paseto.js';
export { decide, buildView, geoFacts, explain, isAllowed, REASONS } from './engine.js';
export { Store, datasetToMutations } from './store.js';
export { SseParser } from './sse.js';
export {
  TollgateError, ConfigError, ProblemError, InvalidRequestError, AuthenticationError,
  PermissionDeniedError, NotFoundError, RateLimitedError, RefusedError, UnavailableError,
  ProtocolError, NeedsRegionError, RevisionNotAppliedError, TimeoutError, LicenseError,
} from './errors.js';
export { fetchKeySet, KEY_SET_PATH } from './keys.js';
