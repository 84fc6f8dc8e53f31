<?php
// Portcullis from PHP with nothing but PDO and the curl extension: tokens
// written into the site's own database (tokens.source: sql), and the admin
// API (mint, publish). mint_sql.php, mint_api.php and publish_api.php are
// command-line front ends; a site's page controller calls these functions.
declare(strict_types=1);

/** A refusal by the admin API or the database, or a failure to reach it. */
final class PortcullisError extends RuntimeException
{
    /** @param string $apiCode the admin API's "error" ("bad_request", "unauthorized", ...) */
    public function __construct(string $message, public readonly int $status = 0, public readonly string $apiCode = '')
    {
        parent::__construct($message);
    }
}

/** A command line that cannot be run. */
final class PortcullisUsage extends InvalidArgumentException
{
}

// The gateway's rules for a user id and a topic pattern: a row that breaks
// them is refused at the subscribe, so say so here, at the mint.
const PORTCULLIS_USER_ID_RULE = '/^[A-Za-z0-9_:@-]{1,128}$/D';
const PORTCULLIS_PATTERN_RULE = '/^(?:[A-Za-z0-9_:@-]+|\*|\*\*|\{userId\})(?:\.(?:[A-Za-z0-9_:@-]+|\*|\*\*|\{userId\}))*$/D';

/** @param list<string> $topics */
function portcullis_check_claims(string $userId, array $topics): void
{
    if (!preg_match(PORTCULLIS_USER_ID_RULE, $userId)) {
        throw new PortcullisUsage(sprintf('user id %s: 1-128 characters of [A-Za-z0-9_:@-] (one topic segment, no ".")', json_encode($userId)));
    }
    if ($topics === []) {
        throw new PortcullisUsage('at least one topic is required');
    }
    foreach ($topics as $t) {
        if (strlen($t) > 200 || !preg_match(PORTCULLIS_PATTERN_RULE, $t)) {
            throw new PortcullisUsage(sprintf('topic %s: dot-separated segments of [A-Za-z0-9_:@-], "*", "**" or "{userId}", at most 200 characters', json_encode($t)));
        }
    }
}

/**
 * portcullis_mint_sql writes one token row for a page view into the table
 * the gateway redeems from (tokens.source: sql) and returns
 * ['token', 'userId', 'topic', 'expires'] for the page; topic is the first
 * of $topics, the one the page subscribes to.
 *
 * The token is 32 random bytes, base64url (43 characters); the row holds
 * only its lower-case hex SHA-256 ($hashed, the gateway's tokens.sql.hashed,
 * true by default), so a copy of the table grants nothing. expires_at is
 * written as a UTC wall-clock time: on MySQL/MariaDB use a DATETIME column,
 * or run the connection with time_zone '+00:00' for a TIMESTAMP one.
 *
 * @param list<string> $topics topics or patterns the token grants
 */
function portcullis_mint_sql(PDO $db, string $userId, array $topics, int $ttlSeconds = 60,
    string $table = 'portcullis_tokens', bool $hashed = true): array
{
    portcullis_check_claims($userId, $topics);
    if (!preg_match('/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$/D', $table)) {
        throw new PortcullisUsage(sprintf('table %s is not a plain [schema.]name', json_encode($table)));
    }
    if ($ttlSeconds < 1) {
        throw new PortcullisUsage("ttl of $ttlSeconds s: must be at least 1");
    }
    $token = rtrim(strtr(base64_encode(random_bytes(32)), '+/', '-_'), '=');
    $expires = time() + $ttlSeconds;
    $at = gmdate('Y-m-d H:i:s', $expires);
    if ($db->getAttribute(PDO::ATTR_DRIVER_NAME) === 'pgsql') {
        $at .= '+00'; // timestamptz reads the offset; timestamp ignores it
    }
    $st = $db->prepare("INSERT INTO $table (token_sha256, user_id, topics, expires_at) VALUES (?, ?, ?, ?)");
    try {
        $st->execute([$hashed ? hash('sha256', $token) : $token, $userId,
            json_encode(array_values($topics), JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR), $at]);
    } catch (PDOException $e) {
        throw new PortcullisError("insert into $table: " . $e->getMessage());
    }
    return ['token' => $token, 'userId' => $userId, 'topic' => $topics[0], 'expires' => gmdate('Y-m-d\TH:i:s\Z', $expires)];
}

/**
 * portcullis_admin_from_env returns ['url', 'key', 'ca'] from
 * PORTCULLIS_ADMIN_URL (default http://127.0.0.1:8081; the gateway writes
 * it to <data_dir>/admin.url), PORTCULLIS_ADMIN_KEY_FILE (default
 * ./portcullis-data/admin.key, the gateway's admin.key_file) and
 * PORTCULLIS_ADMIN_CA_FILE (a PEM CA bundle for an admin API behind HTTPS
 * with a private CA; default: the system's trust store).
 */
function portcullis_admin_from_env(): array
{
    $keyFile = getenv('PORTCULLIS_ADMIN_KEY_FILE') ?: 'portcullis-data/admin.key';
    $key = @file_get_contents($keyFile);
    if ($key === false) {
        $why = error_get_last()['message'] ?? 'unreadable';
        throw new PortcullisError("cannot read the admin key file $keyFile (PORTCULLIS_ADMIN_KEY_FILE): $why");
    }
    $key = trim($key);
    if ($key === '') {
        throw new PortcullisError("the admin key file $keyFile is empty");
    }
    return ['url' => rtrim(getenv('PORTCULLIS_ADMIN_URL') ?: 'http://127.0.0.1:8081', '/'), 'key' => $key,
        'ca' => getenv('PORTCULLIS_ADMIN_CA_FILE') ?: null];
}

/** portcullis_admin_call sends one JSON request to the admin API and returns the decoded reply. */
function portcullis_admin_call(array $admin, string $method, string $path, ?array $body = null): array
{
    $ch = curl_init($admin['url'] . $path);
    $opts = [
        CURLOPT_CUSTOMREQUEST => $method,
        CURLOPT_RETURNTRANSFER => true,
        CURLOPT_HTTPHEADER => ['Authorization: Bearer ' . $admin['key'], 'Content-Type: application/json'],
        CURLOPT_CONNECTTIMEOUT_MS => 2000,
        CURLOPT_TIMEOUT_MS => 5000,
        CURLOPT_PROTOCOLS => CURLPROTO_HTTP | CURLPROTO_HTTPS,
    ];
    if ($body !== null) {
        $opts[CURLOPT_POSTFIELDS] = json_encode($body, JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR);
    }
    if ($admin['ca'] !== null) {
        $opts[CURLOPT_CAINFO] = $admin['ca'];
    }
    curl_setopt_array($ch, $opts);
    $text = curl_exec($ch);
    if ($text === false) {
        $err = curl_error($ch);
        curl_close($ch);
        throw new PortcullisError("$method {$admin['url']}$path: $err");
    }
    $status = curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
    curl_close($ch);
    $reply = json_decode($text, true);
    if (!is_array($reply)) {
        throw new PortcullisError(sprintf('%s %s: HTTP %d, not JSON: %s', $method, $path, $status, substr($text, 0, 200)), $status);
    }
    if ($status >= 300) {
        throw new PortcullisError(sprintf('%s %s: HTTP %d %s: %s', $method, $path, $status, $reply['error'] ?? '?', $reply['message'] ?? ''),
            $status, (string)($reply['error'] ?? ''));
    }
    return $reply;
}

/**
 * portcullis_mint_api mints a one-use token through the admin API
 * (tokens.source: store) and returns ['token', 'userId', 'topic', 'expires'].
 *
 * @param list<string> $topics topics or patterns the token grants
 */
function portcullis_mint_api(array $admin, string $userId, array $topics, int $ttlSeconds = 60): array
{
    if ($topics === []) {
        throw new PortcullisUsage('at least one topic is required');
    }
    $r = portcullis_admin_call($admin, 'POST', '/v1/tokens', ['userId' => $userId, 'topics' => array_values($topics), 'ttl' => "{$ttlSeconds}s"]);
    return ['token' => $r['token'], 'userId' => $r['userId'], 'topic' => $topics[0], 'expires' => $r['expires_at']];
}

/** portcullis_publish sends $data (any JSON value) to $topic; it returns ['delivered' => N]. */
function portcullis_publish(array $admin, string $topic, mixed $data): array
{
    return portcullis_admin_call($admin, 'POST', '/v1/publish', ['topic' => $topic, 'data' => $data]);
}

/** portcullis_ttl_from_env reads PORTCULLIS_TOKEN_TTL: whole seconds, default 60. */
function portcullis_ttl_from_env(): int
{
    $raw = getenv('PORTCULLIS_TOKEN_TTL');
    if ($raw === false) {
        return 60;
    }
    if (!preg_match('/^[1-9][0-9]{0,4}$/D', $raw)) {
        throw new PortcullisUsage(sprintf('PORTCULLIS_TOKEN_TTL=%s is not a number of seconds (1-99999)', json_encode($raw)));
    }
    return (int)$raw;
}

/** portcullis_run runs a command-line entry point: exit 2 on usage errors, 1 on refusals. */
function portcullis_run(string $usage, callable $main): never
{
    try {
        $main();
    } catch (PortcullisUsage $e) {
        fwrite(STDERR, $e->getMessage() . "\n$usage\n");
        exit(2);
    } catch (PortcullisError | PDOException | JsonException $e) {
        fwrite(STDERR, 'error: ' . $e->getMessage() . "\n");
        exit(1);
    }
    exit(0);
}
