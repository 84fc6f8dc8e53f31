<?php
// Write a one-use token row for a page view into the site's database, where
// a gateway run with tokens.source: sql redeems it, and print
// {"token","userId","topic","expires"} for the page that subscribes.
//
//   php mint_sql.php USER_ID TOPIC [MORE_TOPICS...]
//
// Environment:
//   PORTCULLIS_DB_DSN            a PDO DSN: mysql:host=127.0.0.1;port=3306;dbname=site
//                                (MySQL, MariaDB) or pgsql:host=127.0.0.1;port=5432;dbname=site
//   PORTCULLIS_DB_USER           the database user
//   PORTCULLIS_DB_PASSWORD_FILE  a file holding its password (optional)
//   PORTCULLIS_TOKEN_TABLE       the gateway's tokens.sql.table (default portcullis_tokens)
//   PORTCULLIS_TOKEN_HASHED      "false" when the gateway runs tokens.sql.hashed: false
//   PORTCULLIS_TOKEN_TTL         seconds until expires_at (default 60)
declare(strict_types=1);

require __DIR__ . '/portcullis.php';

const USAGE = 'usage: php mint_sql.php USER_ID TOPIC [MORE_TOPICS...]';

portcullis_run(USAGE, function () use ($argv): void {
    $args = array_slice($argv, 1);
    if (count($args) < 2) {
        throw new PortcullisUsage('a user id and at least one topic are required');
    }
    $dsn = getenv('PORTCULLIS_DB_DSN');
    if (!$dsn) {
        throw new PortcullisUsage('PORTCULLIS_DB_DSN is not set (a PDO DSN such as mysql:host=127.0.0.1;dbname=site)');
    }
    $password = null;
    if ($file = getenv('PORTCULLIS_DB_PASSWORD_FILE')) {
        $password = @file_get_contents($file);
        if ($password === false) {
            throw new PortcullisError("cannot read the database password file $file (PORTCULLIS_DB_PASSWORD_FILE)");
        }
        $password = rtrim($password, "\r\n");
    }
    $hashed = match (getenv('PORTCULLIS_TOKEN_HASHED') ?: 'true') {
        'true' => true,
        'false' => false,
        default => throw new PortcullisUsage('PORTCULLIS_TOKEN_HASHED must be true or false'),
    };
    $ttl = portcullis_ttl_from_env();
    try {
        $db = new PDO($dsn, getenv('PORTCULLIS_DB_USER') ?: null, $password, [
            PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
            PDO::ATTR_TIMEOUT => 5,
        ]);
    } catch (PDOException $e) {
        throw new PortcullisError('connect to the database: ' . $e->getMessage());
    }
    if ($db->getAttribute(PDO::ATTR_DRIVER_NAME) === 'mysql') {
        // expires_at is UTC: a TIMESTAMP column converts from the session's zone.
        $db->exec("SET time_zone = '+00:00'");
    }
    $row = portcullis_mint_sql($db, $args[0], array_slice($args, 1), $ttl,
        getenv('PORTCULLIS_TOKEN_TABLE') ?: 'portcullis_tokens', $hashed);
    echo json_encode($row, JSON_UNESCAPED_SLASHES), "\n";
});
