# threepid-sidecar: todas las frases que se leen en un correo de verificación, un SMS, un aviso
# de seguridad o una página abierta desde el enlace del correo. Versión en español (tuteo).
# La referencia es el archivo en inglés: las claves son exactamente las mismas.
#
# Variables (nunca traduzcas sus nombres):
#   $server_name  nombre de servidor Matrix del homeserver, p. ej. example.org
#   $app_name     nombre del servicio, p. ej. "Example Chat"
#   $time         fecha y hora ya formateadas, p. ej. "2026-12-06 18:40 UTC"
#   $client_ip    dirección de red parcialmente oculta, p. ej. "203.0.113.*"
#   $token        código (letras y números) que quizá haya que escribir
# Frases cortas y sencillas. El enlace, el código y el diseño se añaden alrededor.

## Común a todos los correos de verificación

mail-greeting = Hola:
mail-code-instead = Si tu app te pide un código en lugar del enlace, escribe este:
mail-button-fallback = Si el botón no funciona, copia este enlace en tu navegador:

## Correo: registro de una cuenta nueva

registration-subject = Valida tu correo
registration-heading = Confirma tu dirección de correo
# Correo de texto plano: le sigue el enlace en una línea aparte.
registration-text = Solicitaste crear una cuenta nueva en { $server_name } con esta dirección de correo. Para confirmar que la dirección es tuya y terminar el registro, abre este enlace y haz clic en el botón de la página:
# Correo HTML: le sigue un botón.
registration-html = Solicitaste crear una cuenta nueva en { $server_name } con esta dirección de correo. Confirma que la dirección es tuya para terminar el registro.
registration-button = Confirmar dirección de correo
registration-ignore = Si no lo solicitaste, puedes ignorar este correo: no pasará nada a menos que alguien abra el enlace y confirme.

## Correo: restablecer la contraseña

password-reset-subject = Restablecimiento de contraseña
password-reset-heading = Restablece tu contraseña
password-reset-text = Alguien solicitó restablecer la contraseña de la cuenta en { $server_name } que usa esta dirección de correo. Para confirmar que fuiste tú, abre este enlace y haz clic en el botón de la página; después, vuelve a tu app para elegir una contraseña nueva:
password-reset-html = Alguien solicitó restablecer la contraseña de la cuenta en { $server_name } que usa esta dirección de correo. Confirma que fuiste tú y después vuelve a tu app para elegir una contraseña nueva.
password-reset-button = Confirmar restablecimiento
password-reset-ignore = Si no lo solicitaste, puedes ignorar este correo: tu contraseña seguirá siendo la misma.

## Correo: añadir esta dirección a una cuenta existente

add-address-subject = Valida tu correo
add-address-heading = Confirma tu dirección de correo
add-address-text = Solicitaste añadir esta dirección de correo a tu cuenta en { $server_name }. Para confirmar que la dirección es tuya, abre este enlace y haz clic en el botón de la página:
add-address-html = Solicitaste añadir esta dirección de correo a tu cuenta en { $server_name }. Confirma que la dirección es tuya para añadirla.
add-address-button = Confirmar dirección de correo
add-address-ignore = Si no lo solicitaste, puedes ignorar este correo: la dirección no se añadirá a menos que alguien abra el enlace y confirme.

## SMS (que sea breve: un SMS admite 160 caracteres latinos simples, o 70 de cualquier otra escritura)

# Sin tildes a propósito (ó, á, í y ú no existen en GSM-7): así el SMS cabe en un solo mensaje de 160 caracteres.
sms-code = Tu codigo de verificacion de { $app_name } es { $token }. Si no lo pediste, ignora este mensaje.

## Aviso de seguridad: se cambió la contraseña

notice-password-subject = Se cambió tu contraseña
notice-password-heading = Se cambió tu contraseña
notice-password-body = La contraseña de tu cuenta en { $server_name } se cambió el { $time } desde la dirección de red { $client_ip }.
notice-password-you = Si fuiste tú, no tienes que hacer nada más.
notice-password-not-you = Si no fuiste tú, restablece tu contraseña ahora con esta dirección de correo e informa a los administradores de { $server_name }.

## Aviso de seguridad: se quitó esta dirección de una cuenta

notice-removed-subject = Dirección de correo eliminada
notice-removed-heading = Dirección de correo eliminada
notice-removed-body = Esta dirección de correo se eliminó de tu cuenta en { $server_name } el { $time }.
notice-removed-you = Si lo hiciste tú, no tienes que hacer nada más.
notice-removed-not-you = Si no fuiste tú, inicia sesión, revisa tu cuenta e informa a los administradores de { $server_name }.
notice-footer = Recibes este correo porque esta dirección pertenece, o perteneció, a una cuenta en { $server_name }. Es solo un aviso: no tienes que confirmar nada.

## Página: lo que abre el enlace del correo (un solo botón; no pasa nada hasta que se pulsa)

confirm-registration-title = Confirma tu dirección de correo
confirm-registration-body = Haz clic en el botón para confirmar que esta dirección de correo es tuya. Después, tu app podrá terminar de crear tu cuenta.
confirm-registration-button = Confirmar dirección de correo
confirm-password-reset-title = Restablece tu contraseña
confirm-password-reset-body = Haz clic en el botón para confirmar que solicitaste restablecer tu contraseña. Después, vuelve a tu app para elegir una nueva.
confirm-password-reset-button = Confirmar restablecimiento
confirm-add-address-title = Añadir esta dirección de correo
confirm-add-address-body = Haz clic en el botón para confirmar que esta dirección de correo es tuya. Después, tu app podrá añadirla a tu cuenta.
confirm-add-address-button = Confirmar dirección de correo
confirm-ignore = Si no lo solicitaste, cierra esta página: no cambiará nada a menos que hagas clic en el botón.

## Página: después del botón, si funcionó

success-title = Dirección de correo verificada
success-body = Gracias. Vuelve a tu app para continuar; ya puedes cerrar esta página.

## Página: después del botón, si no funcionó

failure-title = No se pudo verificar tu dirección de correo
failure-next = Vuelve a tu app, pídele que envíe un correo nuevo y vuelve a intentarlo.
failure-link-incomplete = Este enlace está incompleto. Copia el enlace completo del correo en tu navegador.
failure-link-expired = Este enlace ya no es válido. Vuelve a empezar desde tu app.
failure-token-incorrect = El código de este enlace es incorrecto o ha caducado.
failure-too-many-attempts = Se probaron demasiados códigos incorrectos para esta solicitud. Vuelve a empezar desde tu app.
failure-rate-limited = Demasiados intentos desde tu red. Espera unos minutos y vuelve a abrir el enlace.
failure-unavailable = El servicio no está disponible temporalmente. Vuelve a abrir el enlace dentro de un minuto.
failure-other = Algo salió mal. Vuelve a abrir el enlace dentro de un minuto.
