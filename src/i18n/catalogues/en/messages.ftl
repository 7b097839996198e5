# threepid-sidecar: every sentence a user reads in a verification mail, an SMS, a security
# notice or a page the mailed link opens. English is the reference: every other catalogue has
# exactly these keys.
#
# Variables (never translate their names):
#   $server_name  the homeserver's Matrix server name, e.g. example.org
#   $app_name     the name of the service, e.g. "Example Chat"
#   $time         a date and time, already written out, e.g. "2026-12-06 18:40 UTC"
#   $client_ip    a partly hidden network address, e.g. "203.0.113.*"
#   $token        a code (letters and digits) the user may have to type
# Keep sentences short and plain. The link, the code and the layout are added around them.

## Shared by every verification mail

mail-greeting = Hello,
mail-code-instead = If your app asks for a code instead, enter:
mail-button-fallback = If the button does not work, copy this link into your browser:

## Mail: registering a new account

registration-subject = Validate your email
registration-heading = Confirm your email address
# Plain-text mail: followed by the link on a line of its own.
registration-text = You asked to register a new account on { $server_name } with this email address. To confirm that the address is yours and finish registering, open this link and press the button on the page:
# HTML mail: followed by a button.
registration-html = You asked to register a new account on { $server_name } with this email address. Confirm that the address is yours to finish registering.
registration-button = Confirm email address
registration-ignore = If you did not ask for this, you can ignore this email: nothing happens unless the link is opened and confirmed.

## Mail: resetting the password

password-reset-subject = Password reset
password-reset-heading = Reset your password
password-reset-text = Someone asked to reset the password of the account on { $server_name } that uses this email address. To confirm that it was you, open this link and press the button on the page, then return to your app to choose a new password:
password-reset-html = Someone asked to reset the password of the account on { $server_name } that uses this email address. Confirm that it was you, then return to your app to choose a new password.
password-reset-button = Confirm password reset
password-reset-ignore = If you did not ask for this, you can ignore this email: your password stays as it is.

## Mail: adding this address to an existing account

add-address-subject = Validate your email
add-address-heading = Confirm your email address
add-address-text = You asked to add this email address to your account on { $server_name }. To confirm that the address is yours, open this link and press the button on the page:
add-address-html = You asked to add this email address to your account on { $server_name }. Confirm that the address is yours to add it.
add-address-button = Confirm email address
add-address-ignore = If you did not ask for this, you can ignore this email: the address is not added unless the link is opened and confirmed.

## SMS (keep it short: one SMS holds 160 plain Latin characters, or 70 of any other script)

sms-code = Your { $app_name } verification code is { $token }. If you did not ask for it, ignore this message.

## Security notice: the password was changed

notice-password-subject = Your password was changed
notice-password-heading = Your password was changed
notice-password-body = The password of your account on { $server_name } was changed on { $time }, from the network address { $client_ip }.
notice-password-you = If this was you, there is nothing more to do.
notice-password-not-you = If it was not you, reset your password now with this email address, and tell the administrators of { $server_name }.

## Security notice: this address was removed from an account

notice-removed-subject = Email address removed
notice-removed-heading = Email address removed
notice-removed-body = This email address was removed from your account on { $server_name } on { $time }.
notice-removed-you = If you did this, there is nothing more to do.
notice-removed-not-you = If you did not, sign in and check your account, and tell the administrators of { $server_name }.
notice-footer = You get this email because this address belongs, or belonged, to an account on { $server_name }. It is only a notice: there is nothing to confirm.

## Page: what the mailed link opens (one button; nothing happens until it is pressed)

confirm-registration-title = Confirm your email address
confirm-registration-body = Press the button to confirm that this email address is yours. Your app can then finish creating your account.
confirm-registration-button = Confirm email address
confirm-password-reset-title = Reset your password
confirm-password-reset-body = Press the button to confirm that you asked to reset your password. Then return to your app to choose a new one.
confirm-password-reset-button = Confirm password reset
confirm-add-address-title = Add this email address
confirm-add-address-body = Press the button to confirm that this email address is yours. Your app can then add it to your account.
confirm-add-address-button = Confirm email address
confirm-ignore = If you did not ask for this, close this page: nothing changes unless you press the button.

## Page: after the button, when it worked

success-title = Email address verified
success-body = Thank you. Return to your app to continue; you can close this page.

## Page: after the button, when it did not work

failure-title = Could not verify your email address
failure-next = Return to your app and ask it to send a new email, then try again.
failure-link-incomplete = This link is incomplete. Copy the whole link from the email into your browser.
failure-link-expired = This link is not valid any more. Start again from your app.
failure-token-incorrect = The code in this link is wrong or has expired.
failure-too-many-attempts = Too many wrong codes were tried for this request. Start again from your app.
failure-rate-limited = Too many attempts from your network. Wait a few minutes, then try the link again.
failure-unavailable = The service is temporarily unavailable. Try the link again in a minute.
failure-other = Something went wrong. Try the link again in a minute.
