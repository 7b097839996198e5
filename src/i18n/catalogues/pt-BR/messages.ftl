# threepid-sidecar: todas as frases que alguém lê num e-mail de verificação, num SMS, num aviso
# de segurança ou numa página aberta pelo link do e-mail. Versão em português do Brasil (você).
# A referência é o arquivo em inglês: as chaves são exatamente as mesmas.
#
# Variáveis (nunca traduza os nomes):
#   $server_name  nome de servidor Matrix do homeserver, ex.: example.org
#   $app_name     nome do serviço, ex.: "Example Chat"
#   $time         data e hora já formatadas, ex.: "2026-12-06 18:40 UTC"
#   $client_ip    endereço de rede parcialmente oculto, ex.: "203.0.113.*"
#   $token        código (letras e números) que talvez precise ser digitado
# Frases curtas e simples. O link, o código e o layout são adicionados em volta.

## Comum a todos os e-mails de verificação

mail-greeting = Olá,
mail-code-instead = Se o seu app pedir um código em vez disso, digite:
mail-button-fallback = Se o botão não funcionar, copie e cole este link no seu navegador:

## E-mail: cadastro de uma nova conta

registration-subject = Valide seu e-mail
registration-heading = Confirme seu endereço de e-mail
# E-mail em texto simples: seguido do link em uma linha separada.
registration-text = Você pediu para criar uma nova conta em { $server_name } com este endereço de e-mail. Para confirmar que o endereço é seu e concluir o cadastro, abra este link e clique no botão da página:
# E-mail em HTML: seguido de um botão.
registration-html = Você pediu para criar uma nova conta em { $server_name } com este endereço de e-mail. Confirme que o endereço é seu para concluir o cadastro.
registration-button = Confirmar endereço de e-mail
registration-ignore = Se você não fez esse pedido, pode ignorar este e-mail: nada acontece a menos que o link seja aberto e confirmado.

## E-mail: redefinição de senha

password-reset-subject = Redefinição de senha
password-reset-heading = Redefina sua senha
password-reset-text = Alguém pediu para redefinir a senha da conta em { $server_name } que usa este endereço de e-mail. Para confirmar que foi você, abra este link e clique no botão da página; depois, volte ao seu app para escolher uma nova senha:
password-reset-html = Alguém pediu para redefinir a senha da conta em { $server_name } que usa este endereço de e-mail. Confirme que foi você e depois volte ao seu app para escolher uma nova senha.
password-reset-button = Confirmar redefinição de senha
password-reset-ignore = Se você não fez esse pedido, pode ignorar este e-mail: sua senha continua a mesma.

## E-mail: adicionar este endereço a uma conta existente

add-address-subject = Valide seu e-mail
add-address-heading = Confirme seu endereço de e-mail
add-address-text = Você pediu para adicionar este endereço de e-mail à sua conta em { $server_name }. Para confirmar que o endereço é seu, abra este link e clique no botão da página:
add-address-html = Você pediu para adicionar este endereço de e-mail à sua conta em { $server_name }. Confirme que o endereço é seu para adicioná-lo.
add-address-button = Confirmar endereço de e-mail
add-address-ignore = Se você não fez esse pedido, pode ignorar este e-mail: o endereço só é adicionado se o link for aberto e confirmado.

## SMS (seja breve: um SMS comporta 160 caracteres latinos simples, ou 70 de qualquer outra escrita)

# Sem acentos de propósito (ó, ã, ç e ê não existem no GSM-7): assim o SMS cabe em uma única mensagem de 160 caracteres.
sms-code = Seu codigo de verificacao do { $app_name }: { $token }. Se nao foi voce que pediu, ignore esta mensagem.

## Aviso de segurança: a senha foi alterada

notice-password-subject = Sua senha foi alterada
notice-password-heading = Sua senha foi alterada
notice-password-body = A senha da sua conta em { $server_name } foi alterada em { $time }, a partir do endereço de rede { $client_ip }.
notice-password-you = Se foi você, não é preciso fazer mais nada.
notice-password-not-you = Se não foi você, redefina sua senha agora com este endereço de e-mail e avise os administradores de { $server_name }.

## Aviso de segurança: este endereço foi removido de uma conta

notice-removed-subject = Endereço de e-mail removido
notice-removed-heading = Endereço de e-mail removido
notice-removed-body = Em { $time }, este endereço de e-mail foi removido da sua conta em { $server_name }.
notice-removed-you = Se foi você, não é preciso fazer mais nada.
notice-removed-not-you = Se não foi você, entre na sua conta, confira se está tudo certo e avise os administradores de { $server_name }.
notice-footer = Você está recebendo este e-mail porque este endereço pertence, ou pertenceu, a uma conta em { $server_name }. É apenas um aviso: não há nada para confirmar.

## Página: o que o link do e-mail abre (um único botão; nada acontece até ele ser clicado)

confirm-registration-title = Confirme seu endereço de e-mail
confirm-registration-body = Clique no botão para confirmar que este endereço de e-mail é seu. Depois, seu app poderá concluir a criação da sua conta.
confirm-registration-button = Confirmar endereço de e-mail
confirm-password-reset-title = Redefina sua senha
confirm-password-reset-body = Clique no botão para confirmar que você pediu para redefinir sua senha. Depois, volte ao seu app para escolher uma nova.
confirm-password-reset-button = Confirmar redefinição de senha
confirm-add-address-title = Adicionar este endereço de e-mail
confirm-add-address-body = Clique no botão para confirmar que este endereço de e-mail é seu. Depois, seu app poderá adicioná-lo à sua conta.
confirm-add-address-button = Confirmar endereço de e-mail
confirm-ignore = Se você não fez esse pedido, feche esta página: nada muda a menos que você clique no botão.

## Página: depois do botão, quando deu certo

success-title = Endereço de e-mail verificado
success-body = Obrigado! Volte ao seu app para continuar. Você já pode fechar esta página.

## Página: depois do botão, quando não deu certo

failure-title = Não foi possível verificar seu endereço de e-mail
failure-next = Volte ao seu app, peça o envio de um novo e-mail e tente de novo.
failure-link-incomplete = Este link está incompleto. Copie o link completo do e-mail e cole no seu navegador.
failure-link-expired = Este link não é mais válido. Comece de novo pelo seu app.
failure-token-incorrect = O código neste link está errado ou expirou.
failure-too-many-attempts = Foram tentados códigos errados demais para esta solicitação. Comece de novo pelo seu app.
failure-rate-limited = Muitas tentativas a partir da sua rede. Aguarde alguns minutos e abra o link de novo.
failure-unavailable = O serviço está temporariamente indisponível. Abra o link de novo daqui a um minuto.
failure-other = Algo deu errado. Abra o link de novo daqui a um minuto.
