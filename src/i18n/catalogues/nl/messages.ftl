# threepid-sidecar: elke zin die iemand leest in een verificatiemail, een sms, een
# beveiligingsmelding of een pagina die de link uit de e-mail opent. Nederlandse versie (je/jij).
# Het Engelse bestand is de referentie: de sleutels zijn precies dezelfde.
#
# Variabelen (vertaal de namen nooit):
#   $server_name  Matrix-servernaam van de homeserver, bijv. example.org
#   $app_name     naam van de dienst, bijv. "Example Chat"
#   $time         datum en tijd, al uitgeschreven, bijv. "2026-12-06 18:40 UTC"
#   $client_ip    deels verborgen netwerkadres, bijv. "203.0.113.*"
#   $token        code (letters en cijfers) die de gebruiker misschien moet intypen
# Korte, eenvoudige zinnen. De link, de code en de opmaak komen eromheen.

## Gedeeld door alle verificatiemails

mail-greeting = Hallo,
mail-code-instead = Vraagt je app in plaats daarvan om een code? Voer dan deze in:
mail-button-fallback = Werkt de knop niet? Kopieer dan deze link en plak hem in je browser:

## E-mail: een nieuw account registreren

registration-subject = Verifieer je e-mailadres
registration-heading = Bevestig je e-mailadres
# E-mail in platte tekst: daarna volgt de link op een eigen regel.
registration-text = Je hebt gevraagd om met dit e-mailadres een nieuw account aan te maken op { $server_name }. Om te bevestigen dat het adres van jou is en je registratie af te ronden, open je deze link en klik je op de knop op de pagina:
# HTML-e-mail: daarna volgt een knop.
registration-html = Je hebt gevraagd om met dit e-mailadres een nieuw account aan te maken op { $server_name }. Bevestig dat het adres van jou is om je registratie af te ronden.
registration-button = E-mailadres bevestigen
registration-ignore = Heb je dit niet aangevraagd? Dan kun je deze e-mail negeren: er gebeurt niets zolang de link niet is geopend en bevestigd.

## E-mail: het wachtwoord opnieuw instellen

password-reset-subject = Wachtwoord opnieuw instellen
password-reset-heading = Stel je wachtwoord opnieuw in
password-reset-text = Iemand heeft gevraagd om het wachtwoord opnieuw in te stellen van het account op { $server_name } dat dit e-mailadres gebruikt. Om te bevestigen dat jij dit was, open je deze link, klik je op de knop op de pagina en ga je daarna terug naar je app om een nieuw wachtwoord te kiezen:
password-reset-html = Iemand heeft gevraagd om het wachtwoord opnieuw in te stellen van het account op { $server_name } dat dit e-mailadres gebruikt. Bevestig dat jij dit was en ga daarna terug naar je app om een nieuw wachtwoord te kiezen.
password-reset-button = Wachtwoordreset bevestigen
password-reset-ignore = Heb je dit niet aangevraagd? Dan kun je deze e-mail negeren: je wachtwoord blijft hetzelfde.

## E-mail: dit adres toevoegen aan een bestaand account

add-address-subject = Verifieer je e-mailadres
add-address-heading = Bevestig je e-mailadres
add-address-text = Je hebt gevraagd om dit e-mailadres toe te voegen aan je account op { $server_name }. Om te bevestigen dat het adres van jou is, open je deze link en klik je op de knop op de pagina:
add-address-html = Je hebt gevraagd om dit e-mailadres toe te voegen aan je account op { $server_name }. Bevestig dat het adres van jou is om het toe te voegen.
add-address-button = E-mailadres bevestigen
add-address-ignore = Heb je dit niet aangevraagd? Dan kun je deze e-mail negeren: het adres wordt pas toegevoegd als de link is geopend en bevestigd.

## Sms (houd het kort: één sms bevat 160 gewone Latijnse tekens, of 70 van elk ander schrift)

sms-code = Je verificatiecode voor { $app_name } is { $token }. Heb je deze niet aangevraagd? Negeer dan dit bericht.

## Beveiligingsmelding: het wachtwoord is gewijzigd

notice-password-subject = Je wachtwoord is gewijzigd
notice-password-heading = Je wachtwoord is gewijzigd
notice-password-body = Het wachtwoord van je account op { $server_name } is op { $time } gewijzigd vanaf het netwerkadres { $client_ip }.
notice-password-you = Was jij dit? Dan hoef je verder niets te doen.
notice-password-not-you = Was jij dit niet? Stel dan nu je wachtwoord opnieuw in met dit e-mailadres en laat het de beheerders van { $server_name } weten.

## Beveiligingsmelding: dit adres is uit een account verwijderd

notice-removed-subject = E-mailadres verwijderd
notice-removed-heading = E-mailadres verwijderd
notice-removed-body = Dit e-mailadres is op { $time } verwijderd uit je account op { $server_name }.
notice-removed-you = Heb jij dit gedaan? Dan hoef je verder niets te doen.
notice-removed-not-you = Zo niet, log dan in, controleer je account en laat het de beheerders van { $server_name } weten.
notice-footer = Je ontvangt deze e-mail omdat dit adres hoort of hoorde bij een account op { $server_name }. Dit is alleen een melding: je hoeft niets te bevestigen.

## Pagina: wat de link uit de e-mail opent (één knop; er gebeurt niets tot erop is geklikt)

confirm-registration-title = Bevestig je e-mailadres
confirm-registration-body = Klik op de knop om te bevestigen dat dit e-mailadres van jou is. Daarna kan je app het aanmaken van je account afronden.
confirm-registration-button = E-mailadres bevestigen
confirm-password-reset-title = Stel je wachtwoord opnieuw in
confirm-password-reset-body = Klik op de knop om te bevestigen dat jij hebt gevraagd om je wachtwoord opnieuw in te stellen. Ga daarna terug naar je app om een nieuw wachtwoord te kiezen.
confirm-password-reset-button = Wachtwoordreset bevestigen
confirm-add-address-title = Dit e-mailadres toevoegen
confirm-add-address-body = Klik op de knop om te bevestigen dat dit e-mailadres van jou is. Daarna kan je app het aan je account toevoegen.
confirm-add-address-button = E-mailadres bevestigen
confirm-ignore = Heb je dit niet aangevraagd? Sluit dan deze pagina: er verandert niets zolang je niet op de knop klikt.

## Pagina: na de knop, als het gelukt is

success-title = E-mailadres geverifieerd
success-body = Bedankt. Ga terug naar je app om verder te gaan. Je kunt deze pagina sluiten.

## Pagina: na de knop, als het niet gelukt is

failure-title = Je e-mailadres kon niet worden geverifieerd
failure-next = Ga terug naar je app, laat een nieuwe e-mail sturen en probeer het opnieuw.
failure-link-incomplete = Deze link is onvolledig. Kopieer de hele link uit de e-mail naar je browser.
failure-link-expired = Deze link is niet meer geldig. Begin opnieuw in je app.
failure-token-incorrect = De code in deze link is onjuist of verlopen.
failure-too-many-attempts = Er zijn te veel onjuiste codes geprobeerd voor dit verzoek. Begin opnieuw in je app.
failure-rate-limited = Te veel pogingen vanaf je netwerk. Wacht een paar minuten en probeer de link dan opnieuw.
failure-unavailable = De dienst is tijdelijk niet beschikbaar. Probeer de link over een minuut opnieuw.
failure-other = Er is iets misgegaan. Probeer de link over een minuut opnieuw.
