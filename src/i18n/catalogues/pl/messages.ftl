# threepid-sidecar: każde zdanie, które użytkownik czyta w e-mailu weryfikacyjnym, SMS-ie,
# powiadomieniu o bezpieczeństwie lub na stronie otwieranej z linku. Wersja polska (forma „Ty”,
# zaimki Ty/Twój wielką literą; bez form zależnych od płci). Wzorcem jest plik angielski: klucze są te same.
#
# Zmienne (nigdy nie tłumacz ich nazw):
#   $server_name  nazwa serwera Matrix (homeservera), np. example.org
#   $app_name     nazwa usługi, np. "Example Chat"
#   $time         data i godzina, już sformatowane, np. "2026-12-06 18:40 UTC"
#   $client_ip    częściowo ukryty adres sieciowy, np. "203.0.113.*"
#   $token        kod (litery i cyfry), który być może trzeba wpisać
# Krótkie, proste zdania. Link, kod i układ są dodawane wokół nich.

## Wspólne dla wszystkich e-maili weryfikacyjnych

mail-greeting = Cześć,
mail-code-instead = Jeśli aplikacja poprosi zamiast tego o kod, wpisz:
mail-button-fallback = Jeśli przycisk nie działa, skopiuj ten link do przeglądarki:

## E-mail: rejestracja nowego konta

registration-subject = Zweryfikuj swój adres e-mail
registration-heading = Potwierdź swój adres e-mail
# E-mail tekstowy: po nim link w osobnym wierszu.
registration-text = Chcesz założyć nowe konto na { $server_name } z tym adresem e-mail. Aby potwierdzić, że ten adres należy do Ciebie, i dokończyć rejestrację, otwórz ten link i kliknij przycisk na stronie:
# E-mail HTML: po nim przycisk.
registration-html = Chcesz założyć nowe konto na { $server_name } z tym adresem e-mail. Potwierdź, że ten adres należy do Ciebie, aby dokończyć rejestrację.
registration-button = Potwierdź adres e-mail
registration-ignore = Jeśli to nie Ty, możesz zignorować tego e-maila: nic się nie stanie, dopóki link nie zostanie otwarty i potwierdzony.

## E-mail: resetowanie hasła

password-reset-subject = Resetowanie hasła
password-reset-heading = Zresetuj hasło
password-reset-text = Ktoś poprosił o zresetowanie hasła do konta na { $server_name } powiązanego z tym adresem e-mail. Aby potwierdzić, że to Ty, otwórz ten link i kliknij przycisk na stronie, a potem wróć do aplikacji, aby ustawić nowe hasło:
password-reset-html = Ktoś poprosił o zresetowanie hasła do konta na { $server_name } powiązanego z tym adresem e-mail. Potwierdź, że to Ty, a potem wróć do aplikacji, aby ustawić nowe hasło.
password-reset-button = Potwierdź reset hasła
password-reset-ignore = Jeśli to nie Ty, możesz zignorować tego e-maila: Twoje hasło pozostanie bez zmian.

## E-mail: dodanie tego adresu do istniejącego konta

add-address-subject = Zweryfikuj swój adres e-mail
add-address-heading = Potwierdź swój adres e-mail
add-address-text = Chcesz dodać ten adres e-mail do swojego konta na { $server_name }. Aby potwierdzić, że ten adres należy do Ciebie, otwórz ten link i kliknij przycisk na stronie:
add-address-html = Chcesz dodać ten adres e-mail do swojego konta na { $server_name }. Potwierdź, że ten adres należy do Ciebie, aby go dodać.
add-address-button = Potwierdź adres e-mail
add-address-ignore = Jeśli to nie Ty, możesz zignorować tego e-maila: adres zostanie dodany tylko wtedy, gdy link zostanie otwarty i potwierdzony.

## SMS (krótko: jeden SMS mieści 160 zwykłych znaków łacińskich albo 70 znaków innego pisma)

# Celowo bez polskich znaków (nie ma ich w GSM-7): dzięki temu SMS mieści się w jednej wiadomości (160 znaków).
sms-code = Kod weryfikacyjny do { $app_name }: { $token }. Jesli to nie Ty, zignoruj tego SMS-a.

## Powiadomienie o bezpieczeństwie: zmieniono hasło

notice-password-subject = Twoje hasło zostało zmienione
notice-password-heading = Twoje hasło zostało zmienione
notice-password-body = Hasło do Twojego konta na { $server_name } zostało zmienione { $time } z adresu sieciowego { $client_ip }.
notice-password-you = Jeśli to Ty, nie musisz nic więcej robić.
notice-password-not-you = Jeśli to nie Ty, od razu zresetuj hasło za pomocą tego adresu e-mail i powiadom administratorów { $server_name }.

## Powiadomienie o bezpieczeństwie: ten adres usunięto z konta

notice-removed-subject = Usunięto adres e-mail
notice-removed-heading = Usunięto adres e-mail
notice-removed-body = Ten adres e-mail został usunięty { $time } z Twojego konta na { $server_name }.
notice-removed-you = Jeśli to Ty, nie musisz nic więcej robić.
notice-removed-not-you = Jeśli to nie Ty, zaloguj się, sprawdź swoje konto i powiadom administratorów { $server_name }.
notice-footer = Otrzymujesz tę wiadomość, ponieważ ten adres należy lub należał do konta na { $server_name }. To tylko powiadomienie: nie musisz niczego potwierdzać.

## Strona: to, co otwiera link z e-maila (jeden przycisk; nic się nie dzieje, dopóki nie zostanie kliknięty)

confirm-registration-title = Potwierdź swój adres e-mail
confirm-registration-body = Kliknij przycisk, aby potwierdzić, że ten adres e-mail należy do Ciebie. Aplikacja będzie mogła wtedy dokończyć zakładanie Twojego konta.
confirm-registration-button = Potwierdź adres e-mail
confirm-password-reset-title = Zresetuj hasło
confirm-password-reset-body = Kliknij przycisk, aby potwierdzić, że to Ty prosisz o zresetowanie hasła. Następnie wróć do aplikacji, aby ustawić nowe.
confirm-password-reset-button = Potwierdź reset hasła
confirm-add-address-title = Dodaj ten adres e-mail
confirm-add-address-body = Kliknij przycisk, aby potwierdzić, że ten adres e-mail należy do Ciebie. Aplikacja będzie mogła wtedy dodać go do Twojego konta.
confirm-add-address-button = Potwierdź adres e-mail
confirm-ignore = Jeśli to nie Ty, zamknij tę stronę: nic się nie zmieni, dopóki nie klikniesz przycisku.

## Strona: po kliknięciu przycisku, gdy się udało

success-title = Adres e-mail zweryfikowany
success-body = Dziękujemy. Wróć do aplikacji, aby kontynuować. Tę stronę możesz już zamknąć.

## Strona: po kliknięciu przycisku, gdy się nie udało

failure-title = Nie udało się zweryfikować Twojego adresu e-mail
failure-next = Wróć do aplikacji, poproś o wysłanie nowego e-maila i spróbuj ponownie.
failure-link-incomplete = Ten link jest niepełny. Skopiuj cały link z e-maila do przeglądarki.
failure-link-expired = Ten link jest już nieważny. Zacznij od nowa w aplikacji.
failure-token-incorrect = Kod w tym linku jest nieprawidłowy lub wygasł.
failure-too-many-attempts = Dla tego żądania wpisano zbyt wiele błędnych kodów. Zacznij od nowa w aplikacji.
failure-rate-limited = Zbyt wiele prób z Twojej sieci. Odczekaj kilka minut i otwórz link ponownie.
failure-unavailable = Usługa jest chwilowo niedostępna. Otwórz link ponownie za minutę.
failure-other = Coś poszło nie tak. Otwórz link ponownie za minutę.
