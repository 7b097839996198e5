# threepid-sidecar: jeder Satz, den Nutzer in einer Bestätigungs-E-Mail, einer SMS, einem
# Sicherheitshinweis oder auf einer Seite hinter dem Link lesen. Deutsche Fassung (Anrede: du).
# Referenz ist die englische Datei; die Schlüssel sind genau dieselben.
#
# Variablen (Namen nie übersetzen):
#   $server_name  Matrix-Servername des Homeservers, z. B. example.org
#   $app_name     Name des Dienstes, z. B. "Example Chat"
#   $time         Datum und Uhrzeit, fertig formatiert, z. B. "2026-12-06 18:40 UTC"
#   $client_ip    teilweise verdeckte Netzwerkadresse, z. B. "203.0.113.*"
#   $token        Code (Buchstaben und Ziffern), den man eventuell eintippen muss
# Kurze, einfache Sätze. Link, Code und Layout werden drumherum eingefügt.

## Für alle Bestätigungs-E-Mails

mail-greeting = Hallo,
mail-code-instead = Falls deine App stattdessen nach einem Code fragt, gib diesen ein:
mail-button-fallback = Falls der Button nicht funktioniert, kopiere diesen Link in deinen Browser:

## E-Mail: Registrierung eines neuen Kontos

registration-subject = E-Mail-Adresse bestätigen
registration-heading = Bestätige deine E-Mail-Adresse
# Text-E-Mail: danach folgt der Link in einer eigenen Zeile.
registration-text = Du möchtest dich mit dieser E-Mail-Adresse bei { $server_name } registrieren. Um zu bestätigen, dass die Adresse dir gehört, und die Registrierung abzuschließen, öffne diesen Link und klicke auf der Seite auf den Button:
# HTML-E-Mail: danach folgt ein Button.
registration-html = Du möchtest dich mit dieser E-Mail-Adresse bei { $server_name } registrieren. Bestätige, dass die Adresse dir gehört, um die Registrierung abzuschließen.
registration-button = E-Mail-Adresse bestätigen
registration-ignore = Wenn du das nicht angefordert hast, kannst du diese E-Mail ignorieren: Es passiert nichts, solange der Link nicht geöffnet und bestätigt wird.

## E-Mail: Passwort zurücksetzen

password-reset-subject = Passwort zurücksetzen
password-reset-heading = Setze dein Passwort zurück
password-reset-text = Jemand hat angefordert, das Passwort des Kontos bei { $server_name } zurückzusetzen, zu dem diese E-Mail-Adresse gehört. Um zu bestätigen, dass du das warst, öffne diesen Link, klicke auf der Seite auf den Button und kehre dann zu deiner App zurück, um ein neues Passwort festzulegen:
password-reset-html = Jemand hat angefordert, das Passwort des Kontos bei { $server_name } zurückzusetzen, zu dem diese E-Mail-Adresse gehört. Bestätige, dass du das warst, und kehre dann zu deiner App zurück, um ein neues Passwort festzulegen.
password-reset-button = Zurücksetzen bestätigen
password-reset-ignore = Wenn du das nicht angefordert hast, kannst du diese E-Mail ignorieren: Dein Passwort bleibt unverändert.

## E-Mail: diese Adresse zu einem bestehenden Konto hinzufügen

add-address-subject = E-Mail-Adresse bestätigen
add-address-heading = Bestätige deine E-Mail-Adresse
add-address-text = Du möchtest diese E-Mail-Adresse zu deinem Konto bei { $server_name } hinzufügen. Um zu bestätigen, dass die Adresse dir gehört, öffne diesen Link und klicke auf der Seite auf den Button:
add-address-html = Du möchtest diese E-Mail-Adresse zu deinem Konto bei { $server_name } hinzufügen. Bestätige, dass die Adresse dir gehört, um sie hinzuzufügen.
add-address-button = E-Mail-Adresse bestätigen
add-address-ignore = Wenn du das nicht angefordert hast, kannst du diese E-Mail ignorieren: Die Adresse wird nur hinzugefügt, wenn der Link geöffnet und bestätigt wird.

## SMS (kurz halten: eine SMS fasst 160 einfache lateinische Zeichen oder 70 Zeichen anderer Schriften)

sms-code = Dein Bestätigungscode für { $app_name } lautet { $token }. Falls du ihn nicht angefordert hast, ignoriere diese Nachricht.

## Sicherheitshinweis: Das Passwort wurde geändert

notice-password-subject = Dein Passwort wurde geändert
notice-password-heading = Dein Passwort wurde geändert
notice-password-body = Das Passwort deines Kontos bei { $server_name } wurde am { $time } von der Netzwerkadresse { $client_ip } aus geändert.
notice-password-you = Wenn du das warst, musst du nichts weiter tun.
notice-password-not-you = Wenn du es nicht warst, setze jetzt mit dieser E-Mail-Adresse dein Passwort zurück und informiere die Administratoren von { $server_name }.

## Sicherheitshinweis: Diese Adresse wurde aus einem Konto entfernt

notice-removed-subject = E-Mail-Adresse entfernt
notice-removed-heading = E-Mail-Adresse entfernt
notice-removed-body = Diese E-Mail-Adresse wurde am { $time } aus deinem Konto bei { $server_name } entfernt.
notice-removed-you = Wenn du das warst, musst du nichts weiter tun.
notice-removed-not-you = Wenn nicht, melde dich an, überprüfe dein Konto und informiere die Administratoren von { $server_name }.
notice-footer = Du erhältst diese E-Mail, weil diese Adresse zu einem Konto bei { $server_name } gehört oder gehört hat. Dies ist nur ein Hinweis: Du musst nichts bestätigen.

## Seite: was der Link aus der E-Mail öffnet (ein Button; erst wenn er gedrückt wird, passiert etwas)

confirm-registration-title = Bestätige deine E-Mail-Adresse
confirm-registration-body = Klicke auf den Button, um zu bestätigen, dass diese E-Mail-Adresse dir gehört. Deine App kann dann die Erstellung deines Kontos abschließen.
confirm-registration-button = E-Mail-Adresse bestätigen
confirm-password-reset-title = Setze dein Passwort zurück
confirm-password-reset-body = Klicke auf den Button, um zu bestätigen, dass du das Zurücksetzen deines Passworts angefordert hast. Kehre dann zu deiner App zurück, um ein neues festzulegen.
confirm-password-reset-button = Zurücksetzen bestätigen
confirm-add-address-title = Diese E-Mail-Adresse hinzufügen
confirm-add-address-body = Klicke auf den Button, um zu bestätigen, dass diese E-Mail-Adresse dir gehört. Deine App kann sie dann zu deinem Konto hinzufügen.
confirm-add-address-button = E-Mail-Adresse bestätigen
confirm-ignore = Wenn du das nicht angefordert hast, schließe diese Seite: Solange du nicht auf den Button klickst, ändert sich nichts.

## Seite: nach dem Button, wenn es geklappt hat

success-title = E-Mail-Adresse bestätigt
success-body = Danke! Kehre zu deiner App zurück, um fortzufahren. Diese Seite kannst du schließen.

## Seite: nach dem Button, wenn es nicht geklappt hat

failure-title = Deine E-Mail-Adresse konnte nicht bestätigt werden
failure-next = Kehre zu deiner App zurück, lass dir eine neue E-Mail schicken und versuche es dann noch einmal.
failure-link-incomplete = Dieser Link ist unvollständig. Kopiere den ganzen Link aus der E-Mail in deinen Browser.
failure-link-expired = Dieser Link ist nicht mehr gültig. Starte den Vorgang in deiner App neu.
failure-token-incorrect = Der Code in diesem Link ist falsch oder abgelaufen.
failure-too-many-attempts = Für diese Anfrage wurden zu viele falsche Codes ausprobiert. Starte den Vorgang in deiner App neu.
failure-rate-limited = Zu viele Versuche aus deinem Netzwerk. Warte ein paar Minuten und öffne den Link dann noch einmal.
failure-unavailable = Der Dienst ist vorübergehend nicht verfügbar. Öffne den Link in einer Minute noch einmal.
failure-other = Etwas ist schiefgelaufen. Öffne den Link in einer Minute noch einmal.
