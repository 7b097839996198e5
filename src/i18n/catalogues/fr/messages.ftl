# threepid-sidecar : toutes les phrases qu’un utilisateur lit dans un e-mail de vérification, un SMS,
# une notification de sécurité ou une page ouverte par le lien de l’e-mail. Version française (vouvoiement).
# La référence est le fichier anglais : les clés sont exactement les mêmes.
#
# Variables (ne jamais traduire leurs noms) :
#   $server_name  nom de serveur Matrix du homeserver, p. ex. example.org
#   $app_name     nom du service, p. ex. "Example Chat"
#   $time         date et heure déjà mises en forme, p. ex. "2026-12-06 18:40 UTC"
#   $client_ip    adresse réseau partiellement masquée, p. ex. "203.0.113.*"
#   $token        code (lettres et chiffres) que l’utilisateur peut avoir à saisir
# Phrases courtes et simples. Le lien, le code et la mise en page sont ajoutés autour.

## Commun à tous les e-mails de vérification

mail-greeting = Bonjour,
mail-code-instead = Si votre application vous demande plutôt un code, saisissez :
mail-button-fallback = Si le bouton ne fonctionne pas, copiez ce lien dans votre navigateur :

## E-mail : création d’un nouveau compte

registration-subject = Validez votre adresse e-mail
registration-heading = Confirmez votre adresse e-mail
# E-mail en texte brut : suivi du lien, seul sur sa ligne.
registration-text = Vous avez demandé à créer un compte sur { $server_name } avec cette adresse e-mail. Pour confirmer que cette adresse vous appartient et terminer l’inscription, ouvrez ce lien et cliquez sur le bouton de la page :
# E-mail HTML : suivi d’un bouton.
registration-html = Vous avez demandé à créer un compte sur { $server_name } avec cette adresse e-mail. Confirmez que cette adresse vous appartient pour terminer l’inscription.
registration-button = Confirmer l’adresse e-mail
registration-ignore = Si vous n’êtes pas à l’origine de cette demande, vous pouvez ignorer cet e-mail : rien ne se passe tant que le lien n’a pas été ouvert et confirmé.

## E-mail : réinitialisation du mot de passe

password-reset-subject = Réinitialisation du mot de passe
password-reset-heading = Réinitialisez votre mot de passe
password-reset-text = Quelqu’un a demandé à réinitialiser le mot de passe du compte sur { $server_name } associé à cette adresse e-mail. Pour confirmer qu’il s’agit bien de vous, ouvrez ce lien et cliquez sur le bouton de la page, puis revenez dans votre application pour choisir un nouveau mot de passe :
password-reset-html = Quelqu’un a demandé à réinitialiser le mot de passe du compte sur { $server_name } associé à cette adresse e-mail. Confirmez qu’il s’agit bien de vous, puis revenez dans votre application pour choisir un nouveau mot de passe.
password-reset-button = Confirmer la réinitialisation
password-reset-ignore = Si vous n’êtes pas à l’origine de cette demande, vous pouvez ignorer cet e-mail : votre mot de passe reste inchangé.

## E-mail : ajout de cette adresse à un compte existant

add-address-subject = Validez votre adresse e-mail
add-address-heading = Confirmez votre adresse e-mail
add-address-text = Vous avez demandé à ajouter cette adresse e-mail à votre compte sur { $server_name }. Pour confirmer que cette adresse vous appartient, ouvrez ce lien et cliquez sur le bouton de la page :
add-address-html = Vous avez demandé à ajouter cette adresse e-mail à votre compte sur { $server_name }. Confirmez que cette adresse vous appartient pour l’ajouter.
add-address-button = Confirmer l’adresse e-mail
add-address-ignore = Si vous n’êtes pas à l’origine de cette demande, vous pouvez ignorer cet e-mail : l’adresse n’est ajoutée que si le lien est ouvert et confirmé.

## SMS (restez bref : un SMS contient 160 caractères latins simples, ou 70 de toute autre écriture)

# Apostrophe droite volontaire : le SMS reste en GSM-7 (160 caractères).
sms-code = Votre code de vérification { $app_name } est { $token }. Si vous ne l'avez pas demandé, ignorez ce message.

## Notification de sécurité : le mot de passe a été modifié

notice-password-subject = Votre mot de passe a été modifié
notice-password-heading = Votre mot de passe a été modifié
notice-password-body = Le mot de passe de votre compte sur { $server_name } a été modifié le { $time }, depuis l’adresse réseau { $client_ip }.
notice-password-you = Si c’était vous, vous n’avez rien d’autre à faire.
notice-password-not-you = Si ce n’était pas vous, réinitialisez dès maintenant votre mot de passe avec cette adresse e-mail et prévenez les administrateurs de { $server_name }.

## Notification de sécurité : cette adresse a été retirée d’un compte

notice-removed-subject = Adresse e-mail retirée
notice-removed-heading = Adresse e-mail retirée
notice-removed-body = Cette adresse e-mail a été retirée de votre compte sur { $server_name } le { $time }.
notice-removed-you = Si c’est vous qui l’avez retirée, vous n’avez rien d’autre à faire.
notice-removed-not-you = Sinon, connectez-vous, vérifiez votre compte et prévenez les administrateurs de { $server_name }.
notice-footer = Vous recevez cet e-mail parce que cette adresse est, ou a été, associée à un compte sur { $server_name }. Il s’agit d’une simple notification : vous n’avez rien à confirmer.

## Page : ce qu’ouvre le lien de l’e-mail (un seul bouton ; rien ne se passe avant qu’il soit activé)

confirm-registration-title = Confirmez votre adresse e-mail
confirm-registration-body = Cliquez sur le bouton pour confirmer que cette adresse e-mail vous appartient. Votre application pourra ensuite terminer la création de votre compte.
confirm-registration-button = Confirmer l’adresse e-mail
confirm-password-reset-title = Réinitialisez votre mot de passe
confirm-password-reset-body = Cliquez sur le bouton pour confirmer que vous avez demandé à réinitialiser votre mot de passe. Revenez ensuite dans votre application pour en choisir un nouveau.
confirm-password-reset-button = Confirmer la réinitialisation
confirm-add-address-title = Ajouter cette adresse e-mail
confirm-add-address-body = Cliquez sur le bouton pour confirmer que cette adresse e-mail vous appartient. Votre application pourra ensuite l’ajouter à votre compte.
confirm-add-address-button = Confirmer l’adresse e-mail
confirm-ignore = Si vous n’êtes pas à l’origine de cette demande, fermez cette page : rien ne change tant que vous ne cliquez pas sur le bouton.

## Page : après le bouton, quand tout a fonctionné

success-title = Adresse e-mail vérifiée
success-body = Merci. Revenez dans votre application pour continuer. Vous pouvez fermer cette page.

## Page : après le bouton, quand cela n’a pas fonctionné

failure-title = Impossible de vérifier votre adresse e-mail
failure-next = Revenez dans votre application, demandez-lui d’envoyer un nouvel e-mail, puis réessayez.
failure-link-incomplete = Ce lien est incomplet. Copiez l’intégralité du lien de l’e-mail dans votre navigateur.
failure-link-expired = Ce lien n’est plus valide. Recommencez depuis votre application.
failure-token-incorrect = Le code de ce lien est incorrect ou a expiré.
failure-too-many-attempts = Trop de codes erronés ont été essayés pour cette demande. Recommencez depuis votre application.
failure-rate-limited = Trop de tentatives depuis votre réseau. Patientez quelques minutes, puis rouvrez le lien.
failure-unavailable = Le service est temporairement indisponible. Rouvrez le lien dans une minute.
failure-other = Une erreur s’est produite. Rouvrez le lien dans une minute.
