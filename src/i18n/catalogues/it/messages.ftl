# threepid-sidecar: tutte le frasi che si leggono in un’email di verifica, un SMS, un avviso di
# sicurezza o una pagina aperta dal link dell’email. Versione italiana (si dà del tu).
# Il riferimento è il file inglese: le chiavi sono esattamente le stesse.
#
# Variabili (non tradurre mai i loro nomi):
#   $server_name  nome del server Matrix dell’homeserver, ad es. example.org
#   $app_name     nome del servizio, ad es. "Example Chat"
#   $time         data e ora già formattate, ad es. "2026-12-06 18:40 UTC"
#   $client_ip    indirizzo di rete in parte nascosto, ad es. "203.0.113.*"
#   $token        codice (lettere e cifre) che potrebbe essere necessario digitare
# Frasi brevi e semplici. Il link, il codice e l’impaginazione vengono aggiunti attorno.

## Comune a tutte le email di verifica

mail-greeting = Ciao,
mail-code-instead = Se invece la tua app ti chiede un codice, inserisci:
mail-button-fallback = Se il pulsante non funziona, copia questo link nel browser:

## Email: registrazione di un nuovo account

registration-subject = Verifica la tua email
registration-heading = Conferma il tuo indirizzo email
# Email in testo semplice: seguita dal link su una riga a parte.
registration-text = Hai chiesto di registrare un nuovo account su { $server_name } con questo indirizzo email. Per confermare che l’indirizzo è tuo e completare la registrazione, apri questo link e premi il pulsante nella pagina:
# Email HTML: seguita da un pulsante.
registration-html = Hai chiesto di registrare un nuovo account su { $server_name } con questo indirizzo email. Conferma che l’indirizzo è tuo per completare la registrazione.
registration-button = Conferma indirizzo email
registration-ignore = Se non l’hai chiesto tu, puoi ignorare questa email: non succede nulla finché il link non viene aperto e confermato.

## Email: reimpostazione della password

password-reset-subject = Reimpostazione della password
password-reset-heading = Reimposta la tua password
password-reset-text = Qualcuno ha chiesto di reimpostare la password dell’account su { $server_name } che usa questo indirizzo email. Per confermare che la richiesta è tua, apri questo link e premi il pulsante nella pagina, poi torna alla tua app per scegliere una nuova password:
password-reset-html = Qualcuno ha chiesto di reimpostare la password dell’account su { $server_name } che usa questo indirizzo email. Conferma che la richiesta è tua, poi torna alla tua app per scegliere una nuova password.
password-reset-button = Conferma reimpostazione password
password-reset-ignore = Se non l’hai chiesto tu, puoi ignorare questa email: la tua password resta invariata.

## Email: aggiunta di questo indirizzo a un account esistente

add-address-subject = Verifica la tua email
add-address-heading = Conferma il tuo indirizzo email
add-address-text = Hai chiesto di aggiungere questo indirizzo email al tuo account su { $server_name }. Per confermare che l’indirizzo è tuo, apri questo link e premi il pulsante nella pagina:
add-address-html = Hai chiesto di aggiungere questo indirizzo email al tuo account su { $server_name }. Conferma che l’indirizzo è tuo per aggiungerlo.
add-address-button = Conferma indirizzo email
add-address-ignore = Se non l’hai chiesto tu, puoi ignorare questa email: l’indirizzo non viene aggiunto finché il link non viene aperto e confermato.

## SMS (breve: un SMS contiene 160 caratteri latini semplici, o 70 di qualsiasi altra scrittura)

# Apostrofo dritto voluto: l’SMS resta in GSM-7 (160 caratteri).
sms-code = Il tuo codice di verifica per { $app_name } è { $token }. Se non l'hai richiesto, ignora questo messaggio.

## Avviso di sicurezza: la password è stata modificata

notice-password-subject = La tua password è stata modificata
notice-password-heading = La tua password è stata modificata
notice-password-body = La password del tuo account su { $server_name } è stata modificata il { $time } dall’indirizzo di rete { $client_ip }.
notice-password-you = Se l’hai fatto tu, non devi fare altro.
notice-password-not-you = Se non l’hai fatto tu, reimposta subito la password con questo indirizzo email e avvisa gli amministratori di { $server_name }.

## Avviso di sicurezza: questo indirizzo è stato rimosso da un account

notice-removed-subject = Indirizzo email rimosso
notice-removed-heading = Indirizzo email rimosso
notice-removed-body = Questo indirizzo email è stato rimosso dal tuo account su { $server_name } il { $time }.
notice-removed-you = Se l’hai fatto tu, non devi fare altro.
notice-removed-not-you = Se non l’hai fatto tu, accedi, controlla il tuo account e avvisa gli amministratori di { $server_name }.
notice-footer = Ricevi questa email perché questo indirizzo appartiene, o apparteneva, a un account su { $server_name }. È solo un avviso: non c’è nulla da confermare.

## Pagina: ciò che apre il link dell’email (un solo pulsante; non succede nulla finché non viene premuto)

confirm-registration-title = Conferma il tuo indirizzo email
confirm-registration-body = Premi il pulsante per confermare che questo indirizzo email è tuo. La tua app potrà poi completare la creazione del tuo account.
confirm-registration-button = Conferma indirizzo email
confirm-password-reset-title = Reimposta la tua password
confirm-password-reset-body = Premi il pulsante per confermare che hai chiesto di reimpostare la password. Poi torna alla tua app per sceglierne una nuova.
confirm-password-reset-button = Conferma reimpostazione password
confirm-add-address-title = Aggiungi questo indirizzo email
confirm-add-address-body = Premi il pulsante per confermare che questo indirizzo email è tuo. La tua app potrà poi aggiungerlo al tuo account.
confirm-add-address-button = Conferma indirizzo email
confirm-ignore = Se non l’hai chiesto tu, chiudi questa pagina: non cambia nulla finché non premi il pulsante.

## Pagina: dopo il pulsante, se ha funzionato

success-title = Indirizzo email verificato
success-body = Grazie. Torna alla tua app per continuare; puoi chiudere questa pagina.

## Pagina: dopo il pulsante, se non ha funzionato

failure-title = Impossibile verificare il tuo indirizzo email
failure-next = Torna alla tua app, chiedile di inviare una nuova email e poi riprova.
failure-link-incomplete = Questo link è incompleto. Copia l’intero link dall’email nel browser.
failure-link-expired = Questo link non è più valido. Ricomincia dalla tua app.
failure-token-incorrect = Il codice in questo link è errato o scaduto.
failure-too-many-attempts = Per questa richiesta sono stati provati troppi codici errati. Ricomincia dalla tua app.
failure-rate-limited = Troppi tentativi dalla tua rete. Attendi qualche minuto, poi riapri il link.
failure-unavailable = Il servizio è temporaneamente non disponibile. Riapri il link tra un minuto.
failure-other = Qualcosa è andato storto. Riapri il link tra un minuto.
