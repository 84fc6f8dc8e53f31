<?php
// Mint a one-use token through the admin API (tokens.source: store) and
// print {"token","userId","topic","expires"} for the page that subscribes.
//
//   php mint_api.php USER_ID TOPIC [MORE_TOPICS...]
//
// Environment: PORTCULLIS_ADMIN_URL, PORTCULLIS_ADMIN_KEY_FILE,
// PORTCULLIS_ADMIN_CA_FILE (see portcullis.php), PORTCULLIS_TOKEN_TTL
// (seconds, default 60).
declare(strict_types=1);

require __DIR__ . '/portcullis.php';

const USAGE = 'usage: php mint_api.php USER_ID TOPIC [MORE_TOPICS...]';

portcullis_run(USAGE, function () use ($argv): void {
    $args = array_slice($argv, 1);
    if (count($args) < 2) {
        throw new PortcullisUsage('a user id and at least one topic are required');
    }
    $ttl = portcullis_ttl_from_env();
    $minted = portcullis_mint_api(portcullis_admin_from_env(), $args[0], array_slice($args, 1), $ttl);
    echo json_encode($minted, JSON_UNESCAPED_SLASHES), "\n";
});
