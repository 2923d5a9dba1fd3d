/**
 * Credentials inside text: the user-info of a URL (nats://user:pass@host, postgres://user:pass@db,
 * a NATS token as nats://token@host) and secret query parameters (postgres ...?password=x). Logs
 * and the errors users see pass through here, so a URL given anywhere never prints its secret.
 * No dependencies: the error printer of every binary uses it.
 */

// scheme://user[:password]@ — the user alone may be a token (nats://TOKEN@host), so it goes too.
// A quote and a backslash are not URL characters: excluding them keeps a match inside one JSON string.
const URL_USER_INFO = /\b([a-z][a-z0-9+.-]*:\/\/)([^\s/?#@:"\\]+)(?::([^\s/?#@"\\]*))?@/gi;
const SECRET_QUERY =
  /([?&;](?:password|passwd|pass|secret|token|auth_token|sslpassword|access_token|secret_access_key|x-amz-signature|x-amz-credential)=)[^&;\s#'"]*/gi;

export const REDACTED = '[redacted]';

/** The text with every URL's password (or lone user-info) and secret query value replaced by [redacted]. */
export function redactCredentials(text: string): string {
  if (!text.includes('@') && !text.includes('=')) return text;
  return text
    .replace(URL_USER_INFO, (_m, scheme: string, user: string, password: string | undefined) =>
      password === undefined ? `${scheme}${REDACTED}@` : `${scheme}${user}:${REDACTED}@`,
    )
    .replace(SECRET_QUERY, `$1${REDACTED}`);
}
