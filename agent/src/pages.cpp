#include "pages.hpp"

#include <cctype>

#include "message.hpp"

namespace agent {

namespace {

const Strings kStrings[] = {
    {"en", "Your feedback", "How likely are you to recommend us to a friend or colleague?", "Not at all likely",
     "Extremely likely", "What is the main reason for your score? (optional)", "Send", "Your score was saved.",
     "Thank you!", "Thank you for your feedback.", "This survey is closed.", "This link is not valid.",
     "You answered this survey before; sending again replaces your answer.", "Unsubscribe",
     "Do you want to stop receiving these surveys?", "Unsubscribe", "You will not receive these surveys any more.",
     "The service is busy. Please try again in a minute.", "Too many requests. Please try again in a minute.",
     "The form could not be read. Please reload the page and try again.",
     "Your comment is too long.", "Choose a score and press Send."},
    {"de", "Ihre Meinung", "Wie wahrscheinlich ist es, dass Sie uns einem Freund oder Kollegen empfehlen?",
     "Überhaupt nicht wahrscheinlich", "Äußerst wahrscheinlich", "Was ist der wichtigste Grund für Ihre Bewertung? (optional)",
     "Senden", "Ihre Bewertung wurde gespeichert.", "Vielen Dank!", "Vielen Dank für Ihre Rückmeldung.",
     "Diese Umfrage ist beendet.", "Dieser Link ist nicht gültig.",
     "Sie haben bereits geantwortet; erneutes Senden ersetzt Ihre Antwort.", "Abmelden",
     "Möchten Sie keine weiteren Umfragen erhalten?", "Abmelden", "Sie erhalten keine weiteren Umfragen.",
     "Der Dienst ist ausgelastet. Bitte versuchen Sie es in einer Minute erneut.",
     "Zu viele Anfragen. Bitte versuchen Sie es in einer Minute erneut.",
     "Das Formular konnte nicht gelesen werden. Bitte laden Sie die Seite neu.",
     "Ihr Kommentar ist zu lang.", "Wählen Sie eine Bewertung und klicken Sie auf Senden."},
    {"fr", "Votre avis", "Quelle est la probabilité que vous nous recommandiez à un ami ou un collègue ?",
     "Pas du tout probable", "Très probable", "Quelle est la raison principale de votre note ? (facultatif)",
     "Envoyer", "Votre note a été enregistrée.", "Merci !", "Merci pour votre avis.", "Cette enquête est close.",
     "Ce lien n'est pas valide.", "Vous avez déjà répondu ; un nouvel envoi remplace votre réponse.",
     "Se désabonner", "Voulez-vous ne plus recevoir ces enquêtes ?", "Se désabonner",
     "Vous ne recevrez plus ces enquêtes.", "Le service est occupé. Veuillez réessayer dans une minute.",
     "Trop de requêtes. Veuillez réessayer dans une minute.",
     "Le formulaire n'a pas pu être lu. Veuillez recharger la page.", "Votre commentaire est trop long.",
     "Choisissez une note et appuyez sur Envoyer."},
    {"es", "Su opinión", "¿Qué probabilidad hay de que nos recomiende a un amigo o colega?", "Nada probable",
     "Muy probable", "¿Cuál es el motivo principal de su puntuación? (opcional)", "Enviar",
     "Su puntuación se ha guardado.", "¡Gracias!", "Gracias por su opinión.", "Esta encuesta está cerrada.",
     "Este enlace no es válido.", "Ya respondió esta encuesta; enviar de nuevo reemplaza su respuesta.",
     "Darse de baja", "¿Quiere dejar de recibir estas encuestas?", "Darse de baja",
     "Ya no recibirá estas encuestas.", "El servicio está ocupado. Inténtelo de nuevo en un minuto.",
     "Demasiadas solicitudes. Inténtelo de nuevo en un minuto.",
     "No se pudo leer el formulario. Vuelva a cargar la página.", "Su comentario es demasiado largo.",
     "Elija una puntuación y pulse Enviar."},
    {"it", "La sua opinione", "Quanto è probabile che ci consigli a un amico o a un collega?", "Per niente probabile",
     "Estremamente probabile", "Qual è il motivo principale del suo voto? (facoltativo)", "Invia",
     "Il suo voto è stato salvato.", "Grazie!", "Grazie per il suo parere.", "Questo sondaggio è chiuso.",
     "Questo link non è valido.", "Ha già risposto; un nuovo invio sostituisce la risposta.", "Annulla iscrizione",
     "Vuole smettere di ricevere questi sondaggi?", "Annulla iscrizione", "Non riceverà più questi sondaggi.",
     "Il servizio è occupato. Riprovi tra un minuto.", "Troppe richieste. Riprovi tra un minuto.",
     "Impossibile leggere il modulo. Ricarichi la pagina.", "Il commento è troppo lungo.",
     "Scelga un voto e prema Invia."},
    {"nl", "Uw mening", "Hoe waarschijnlijk is het dat u ons aanbeveelt bij een vriend of collega?",
     "Helemaal niet waarschijnlijk", "Zeer waarschijnlijk", "Wat is de belangrijkste reden voor uw score? (optioneel)",
     "Versturen", "Uw score is opgeslagen.", "Bedankt!", "Bedankt voor uw feedback.", "Deze enquête is gesloten.",
     "Deze link is niet geldig.", "U hebt al geantwoord; opnieuw versturen vervangt uw antwoord.", "Afmelden",
     "Wilt u deze enquêtes niet meer ontvangen?", "Afmelden", "U ontvangt deze enquêtes niet meer.",
     "De dienst is bezet. Probeer het over een minuut opnieuw.", "Te veel verzoeken. Probeer het over een minuut opnieuw.",
     "Het formulier kon niet worden gelezen. Laad de pagina opnieuw.", "Uw opmerking is te lang.",
     "Kies een score en klik op Versturen."},
    {"pt", "A sua opinião", "Qual a probabilidade de nos recomendar a um amigo ou colega?", "Nada provável",
     "Extremamente provável", "Qual o principal motivo da sua nota? (opcional)", "Enviar", "A sua nota foi guardada.",
     "Obrigado!", "Obrigado pela sua opinião.", "Este inquérito está encerrado.", "Este link não é válido.",
     "Já respondeu; enviar de novo substitui a sua resposta.", "Cancelar subscrição",
     "Quer deixar de receber estes inquéritos?", "Cancelar subscrição", "Não voltará a receber estes inquéritos.",
     "O serviço está ocupado. Tente de novo dentro de um minuto.", "Demasiados pedidos. Tente de novo dentro de um minuto.",
     "Não foi possível ler o formulário. Recarregue a página.", "O seu comentário é demasiado longo.",
     "Escolha uma nota e carregue em Enviar."},
    {"pt-br", "Sua opinião", "Qual a probabilidade de você nos recomendar a um amigo ou colega?", "Nada provável",
     "Extremamente provável", "Qual o principal motivo da sua nota? (opcional)", "Enviar", "Sua nota foi salva.",
     "Obrigado!", "Obrigado pela sua opinião.", "Esta pesquisa está encerrada.", "Este link não é válido.",
     "Você já respondeu; enviar de novo substitui sua resposta.", "Cancelar inscrição",
     "Deseja parar de receber estas pesquisas?", "Cancelar inscrição", "Você não receberá mais estas pesquisas.",
     "O serviço está ocupado. Tente novamente em um minuto.", "Muitas solicitações. Tente novamente em um minuto.",
     "Não foi possível ler o formulário. Recarregue a página.", "Seu comentário é longo demais.",
     "Escolha uma nota e clique em Enviar."},
};

std::string lower(std::string s) {
  for (char &c : s) c = c == '_' ? '-' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

const Strings *find(const std::string &l) {
  for (const auto &s : kStrings) if (l == s.lang) return &s;
  return nullptr;
}

const char *kStyle =
    "body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#222}"
    "fieldset{border:0;padding:0;margin:1rem 0}.scores{display:flex;flex-wrap:wrap;gap:.25rem}"
    ".scores label{display:inline-block}.scores input{position:absolute;opacity:0}"
    ".scores span{display:inline-block;min-width:2.2rem;padding:.5rem 0;text-align:center;border:1px solid #888;"
    "border-radius:.3rem;cursor:pointer}.scores input:checked+span{background:#1a5fb4;color:#fff;border-color:#1a5fb4}"
    ".scores input:focus-visible+span{outline:2px solid #000}.ends{display:flex;justify-content:space-between;"
    "font-size:.85rem;color:#555}textarea{width:100%;min-height:6rem;font:inherit}"
    "button{font:inherit;padding:.5rem 1.5rem;margin-top:.5rem}.note{color:#2a7a2a}"
    ".sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}";

std::string head(const Strings &s, const std::string &title, const PageOptions &o) {
  return std::string("<!DOCTYPE html>\n<html lang=\"") + s.lang + "\"><head><meta charset=\"utf-8\">"
         "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
         "<meta name=\"robots\" content=\"noindex, nofollow\"><title>" + html_escape(title) +
         "</title><style nonce=\"" + o.nonce + "\">" + kStyle + "</style></head><body>";
}

}  // namespace

const Strings &strings_for(std::string locale, std::string fallback) {
  std::string l = lower(locale);
  if (const Strings *s = find(l)) return *s;
  auto dash = l.find('-');
  if (dash != std::string::npos)
    if (const Strings *s = find(l.substr(0, dash))) return *s;
  std::string f = lower(fallback);
  if (const Strings *s = find(f)) return *s;
  return kStrings[0];
}

std::string score_page(const Strings &s, int score, bool auto_post, bool answered_before, const PageOptions &o) {
  std::string h = head(s, s.title, o);
  h += std::string("<main><h1>") + s.question + "</h1>";
  if (answered_before) h += std::string("<p>") + s.answered_before + "</p>";
  h += "<form id=\"f\" method=\"post\" action=\"\"><fieldset><legend class=\"sr\">" + std::string(s.question) +
       "</legend><div class=\"scores\">";
  for (int i = 0; i <= 10; i++) {
    std::string n = std::to_string(i);
    h += "<label><input type=\"radio\" name=\"score\" value=\"" + n + "\"" + (i == score ? " checked" : "") +
         "><span>" + n + "</span></label>";
  }
  h += std::string("</div><div class=\"ends\"><span>0 = ") + s.low + "</span><span>10 = " + s.high +
       "</span></div></fieldset>"
       "<p id=\"saved\" class=\"note\" hidden>" + s.saved + "</p>"
       "<label for=\"comment\">" + s.comment_label + "</label><textarea id=\"comment\" name=\"comment\" maxlength=\"10000\">"
       "</textarea><input type=\"hidden\" name=\"csrf\" value=\"" + html_escape(o.csrf) + "\">"
       "<button id=\"send\" type=\"submit\">" + s.send + "</button></form>"
       "<noscript><p>" + s.noscript + "</p></noscript></main>";
  // The score is recorded by the browser showing the page (a scanner's GET records nothing); the
  // form then adds the comment. A second submit of the same form is ignored by the page, and a
  // second answer would only replace the first in the database.
  h += "<script nonce=\"" + o.nonce + "\">(function(){var f=document.getElementById('f'),busy=false;"
       "function data(withComment){var d=new URLSearchParams(new FormData(f));if(!withComment)d.delete('comment');"
       "d.set('ajax','1');return d;}";
  if (auto_post)
    h += "fetch(location.pathname,{method:'POST',body:data(false),credentials:'same-origin',"
         "headers:{'Accept':'application/json'}}).then(function(r){if(r.ok)document.getElementById('saved').hidden=false;});";
  h += "f.addEventListener('submit',function(e){if(busy){e.preventDefault();return;}busy=true;"
       "document.getElementById('send').disabled=true;});})();</script></body></html>";
  return h;
}

std::string message_page(const Strings &s, const std::string &title, const std::string &text, const PageOptions &o) {
  return head(s, title, o) + "<main><h1>" + html_escape(title) + "</h1><p id=\"message\">" + html_escape(text) +
         "</p></main></body></html>";
}

std::string unsubscribe_page(const Strings &s, const PageOptions &o) {
  return head(s, s.unsub_title, o) + "<main><h1>" + s.unsub_title + "</h1><p>" + s.unsub_question +
         "</p><form method=\"post\" action=\"\"><input type=\"hidden\" name=\"csrf\" value=\"" + html_escape(o.csrf) +
         "\"><button id=\"unsubscribe\" type=\"submit\">" + s.unsub_button + "</button></form></main></body></html>";
}

}  // namespace agent
