<?php
// Publish one event to a topic through the admin API and print the reply
// ({"delivered": N}: the subscriptions on this gateway it was queued for).
//
//   php publish_api.php TOPIC JSON_DATA
//   echo '{"headline":"hi"}' | php publish_api.php news -
//
// Environment: PORTCULLIS_ADMIN_URL, PORTCULLIS_ADMIN_KEY_FILE,
// PORTCULLIS_ADMIN_CA_FILE (see portcullis.php).
declare(strict_types=1);

require __DIR__ . '/portcullis.php';

const USAGE = 'usage: php publish_api.php TOPIC JSON_DATA   (JSON_DATA "-" reads it from stdin)';

portcullis_run(USAGE, function () use ($argv): void {
    $args = array_slice($argv, 1);
    if (count($args) !== 2) {
        throw new PortcullisUsage('a topic and one JSON value are required');
    }
    [$topic, $raw] = $args;
    $text = $raw === '-' ? stream_get_contents(STDIN) : $raw;
    try {
        $data = json_decode($text, false, 512, JSON_THROW_ON_ERROR);
    } catch (JsonException $e) {
        throw new PortcullisUsage('JSON_DATA is not JSON: ' . $e->getMessage());
    }
    echo json_encode(portcullis_publish(portcullis_admin_from_env(), $topic, $data), JSON_UNESCAPED_SLASHES), "\n";
});
