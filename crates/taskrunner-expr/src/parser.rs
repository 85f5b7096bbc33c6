//! The JMESPath parser: a Pratt (top-down operator precedence) parser over the lexer's
//! tokens, with bounded recursion, producing an [`ast::Node`](crate::ast::Node).

use serde_json::Value;

use crate::ast::{CmpOp, Node};
use crate::error::ParseError;
use crate::functions::Func;
use crate::lexer::{Tok, Token, tokenize};
use crate::limits::{EXPR_BYTES_MAX, EXPR_DEPTH_MAX};

/// Tokens with a binding power below this end a projection's right-hand side.
const PROJECTION_STOP: u8 = 10;

/// Right binding power for the operand of `!`: the comparators' binding power.
const NOT_OPERAND_BP: u8 = 5;

fn binding_power(tok: &Tok) -> u8 {
    match tok {
        Tok::Pipe => 1,
        Tok::Or => 2,
        Tok::And => 3,
        Tok::Eq | Tok::Ne | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge => 5,
        Tok::Flatten => 9,
        Tok::Star => 20,
        Tok::Filter => 21,
        Tok::Dot => 40,
        Tok::LBrace => 50,
        Tok::LBracket => 55,
        Tok::LParen => 60,
        _ => 0,
    }
}

/// Parses a complete expression.
pub(crate) fn parse(src: &str) -> Result<Node, ParseError> {
    if src.len() > EXPR_BYTES_MAX {
        return Err(ParseError::new(
            EXPR_BYTES_MAX,
            format!(
                "expression is {} bytes long, longer than the limit of {EXPR_BYTES_MAX}",
                src.len()
            ),
        ));
    }
    let tokens = tokenize(src);
    let mut parser = Parser {
        tokens,
        pos: 0,
        depth: 0,
    };
    let node = parser.expression(0)?;
    let tok = parser.peek(0);
    if tok.tok != Tok::Eof {
        return Err(parser.unexpected_at(parser.pos, "end of input"));
    }
    if node.depth() > EXPR_DEPTH_MAX {
        return Err(ParseError::new(
            0,
            format!("expression nested deeper than {EXPR_DEPTH_MAX}"),
        ));
    }
    Ok(node)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self, n: usize) -> &Token {
        let idx = (self.pos + n).min(self.tokens.len().saturating_sub(1));
        &self.tokens[idx]
    }

    fn advance(&mut self) {
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
    }

    /// The error for an unexpected token at index `idx` (lex errors pass through).
    fn unexpected_at(&self, idx: usize, expected: &str) -> ParseError {
        let idx = idx.min(self.tokens.len().saturating_sub(1));
        let token = &self.tokens[idx];
        match &token.tok {
            Tok::Error(message) => ParseError::new(token.start, message.clone()),
            other => ParseError::new(
                token.start,
                format!("expected {expected} but found {}", other.describe()),
            ),
        }
    }

    fn unexpected(&self, expected: &str) -> ParseError {
        self.unexpected_at(self.pos, expected)
    }

    fn expect(&mut self, tok: &Tok, name: &str) -> Result<(), ParseError> {
        if &self.peek(0).tok == tok {
            self.advance();
            Ok(())
        } else {
            Err(self.unexpected(name))
        }
    }

    fn expression(&mut self, rbp: u8) -> Result<Node, ParseError> {
        self.depth += 1;
        if self.depth > EXPR_DEPTH_MAX {
            let offset = self.peek(0).start;
            return Err(ParseError::new(
                offset,
                format!("expression nested deeper than {EXPR_DEPTH_MAX}"),
            ));
        }
        let result = self.expression_inner(rbp);
        self.depth -= 1;
        result
    }

    fn expression_inner(&mut self, rbp: u8) -> Result<Node, ParseError> {
        let mut left = self.nud()?;
        while rbp < binding_power(&self.peek(0).tok) {
            left = self.led(left)?;
        }
        Ok(left)
    }

    fn nud(&mut self) -> Result<Node, ParseError> {
        let token = self.peek(0).clone();
        match token.tok {
            Tok::Literal(v) => {
                self.advance();
                Ok(Node::Literal(v))
            }
            Tok::RawString(s) => {
                self.advance();
                Ok(Node::Literal(Value::String(s)))
            }
            Tok::Ident(name) => {
                self.advance();
                if self.peek(0).tok == Tok::LParen {
                    return self.function_call(name, token.start);
                }
                Ok(Node::Field(name))
            }
            Tok::QuotedIdent(name) => {
                self.advance();
                if self.peek(0).tok == Tok::LParen {
                    return Err(ParseError::new(
                        token.start,
                        "quoted identifiers cannot be function names",
                    ));
                }
                Ok(Node::Field(name))
            }
            Tok::Star => {
                self.advance();
                let rhs = if self.peek(0).tok == Tok::RBracket {
                    Node::Identity
                } else {
                    self.projection_rhs(binding_power(&Tok::Star))?
                };
                Ok(Node::ValueProjection {
                    lhs: Box::new(Node::Identity),
                    rhs: Box::new(rhs),
                })
            }
            Tok::Filter => {
                self.advance();
                self.filter(Node::Identity)
            }
            Tok::LBrace => {
                self.advance();
                self.multi_select_hash()
            }
            Tok::LParen => {
                self.advance();
                let inner = self.expression(0)?;
                self.expect(&Tok::RParen, "')'")?;
                Ok(inner)
            }
            Tok::Flatten => {
                self.advance();
                let rhs = self.projection_rhs(binding_power(&Tok::Flatten))?;
                Ok(Node::Projection {
                    lhs: Box::new(Node::Flatten(Box::new(Node::Identity))),
                    rhs: Box::new(rhs),
                })
            }
            Tok::Not => {
                self.advance();
                // `!` binds tighter than comparators, `&&`, `||` and `|`, but looser than
                // `.`, so `!inputs.flag` negates the field (jmespath.py's binding power
                // would make it `(!inputs).flag`, always null).
                let inner = self.expression(NOT_OPERAND_BP)?;
                Ok(Node::Not(Box::new(inner)))
            }
            Tok::LBracket => {
                self.advance();
                match (&self.peek(0).tok, &self.peek(1).tok) {
                    (Tok::Number(_) | Tok::Colon, _) => {
                        let index = self.index_expression()?;
                        self.project_if_slice(Node::Identity, index)
                    }
                    (Tok::Star, Tok::RBracket) => {
                        self.advance();
                        self.advance();
                        let rhs = self.projection_rhs(binding_power(&Tok::Star))?;
                        Ok(Node::Projection {
                            lhs: Box::new(Node::Identity),
                            rhs: Box::new(rhs),
                        })
                    }
                    _ => self.multi_select_list(),
                }
            }
            Tok::At => {
                self.advance();
                Ok(Node::Identity)
            }
            Tok::Ampersand => {
                self.advance();
                let inner = self.expression(0)?;
                Ok(Node::Expref(Box::new(inner)))
            }
            _ => Err(self.unexpected("an expression")),
        }
    }

    fn led(&mut self, left: Node) -> Result<Node, ParseError> {
        let token = self.peek(0).clone();
        match token.tok {
            Tok::Dot => {
                self.advance();
                if self.peek(0).tok == Tok::Star {
                    self.advance();
                    // The star's binding power (not the dot's) keeps later field paths inside
                    // the projection: `a.*.b.c` projects `b.c` (jmespath.py issue 182).
                    let rhs = self.projection_rhs(binding_power(&Tok::Star))?;
                    Ok(Node::ValueProjection {
                        lhs: Box::new(left),
                        rhs: Box::new(rhs),
                    })
                } else {
                    let rhs = self.dot_rhs(binding_power(&Tok::Dot))?;
                    Ok(chain(left, rhs))
                }
            }
            Tok::Pipe => {
                self.advance();
                let rhs = self.expression(binding_power(&Tok::Pipe))?;
                Ok(Node::Pipe(Box::new(left), Box::new(rhs)))
            }
            Tok::Or => {
                self.advance();
                let rhs = self.expression(binding_power(&Tok::Or))?;
                Ok(Node::Or(Box::new(left), Box::new(rhs)))
            }
            Tok::And => {
                self.advance();
                let rhs = self.expression(binding_power(&Tok::And))?;
                Ok(Node::And(Box::new(left), Box::new(rhs)))
            }
            Tok::Eq | Tok::Ne | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge => {
                let op = match token.tok {
                    Tok::Eq => CmpOp::Eq,
                    Tok::Ne => CmpOp::Ne,
                    Tok::Lt => CmpOp::Lt,
                    Tok::Le => CmpOp::Le,
                    Tok::Gt => CmpOp::Gt,
                    _ => CmpOp::Ge,
                };
                self.advance();
                let rhs = self.expression(binding_power(&token.tok))?;
                Ok(Node::Compare {
                    op,
                    lhs: Box::new(left),
                    rhs: Box::new(rhs),
                })
            }
            Tok::Flatten => {
                self.advance();
                let rhs = self.projection_rhs(binding_power(&Tok::Flatten))?;
                Ok(Node::Projection {
                    lhs: Box::new(Node::Flatten(Box::new(left))),
                    rhs: Box::new(rhs),
                })
            }
            Tok::Filter => {
                self.advance();
                self.filter(left)
            }
            Tok::LBracket => {
                self.advance();
                match (&self.peek(0).tok, &self.peek(1).tok) {
                    (Tok::Number(_) | Tok::Colon, _) => {
                        let index = self.index_expression()?;
                        self.project_if_slice(left, index)
                    }
                    (Tok::Star, Tok::RBracket) => {
                        self.advance();
                        self.advance();
                        let rhs = self.projection_rhs(binding_power(&Tok::Star))?;
                        Ok(Node::Projection {
                            lhs: Box::new(left),
                            rhs: Box::new(rhs),
                        })
                    }
                    (Tok::Star, _) => Err(self.unexpected_at(self.pos + 1, "']'")),
                    _ => Err(self.unexpected("a number, ':' or '*'")),
                }
            }
            Tok::LParen => {
                // Function calls are handled in `nud` (a name directly followed by '(').
                Err(ParseError::new(
                    token.start,
                    "unexpected '(': only a plain identifier can be called as a function",
                ))
            }
            _ => Err(self.unexpected("an operator")),
        }
    }

    fn function_call(&mut self, name: String, name_offset: usize) -> Result<Node, ParseError> {
        let paren_offset = self.peek(0).start;
        self.advance(); // '('
        let func = Func::lookup(&name)
            .ok_or_else(|| ParseError::new(name_offset, format!("unknown function '{name}'")))?;
        let mut args = Vec::new();
        if self.peek(0).tok == Tok::RParen {
            self.advance();
        } else {
            loop {
                args.push(self.expression(0)?);
                match self.peek(0).tok {
                    Tok::Comma => {
                        self.advance();
                    }
                    Tok::RParen => {
                        self.advance();
                        break;
                    }
                    _ => return Err(self.unexpected("',' or ')'")),
                }
            }
        }
        if let Err(message) = func.check_arity(args.len()) {
            return Err(ParseError::new(paren_offset, message));
        }
        Ok(Node::Function { func, args })
    }

    fn filter(&mut self, left: Node) -> Result<Node, ParseError> {
        let cond = self.expression(0)?;
        self.expect(&Tok::RBracket, "']'")?;
        let rhs = if self.peek(0).tok == Tok::Flatten {
            Node::Identity
        } else {
            self.projection_rhs(binding_power(&Tok::Filter))?
        };
        Ok(Node::FilterProjection {
            lhs: Box::new(left),
            cond: Box::new(cond),
            rhs: Box::new(rhs),
        })
    }

    /// Parses `N]` or a slice `[start]:[stop][:[step]]]`; the `[` is already consumed.
    fn index_expression(&mut self) -> Result<Node, ParseError> {
        if self.peek(0).tok == Tok::Colon || self.peek(1).tok == Tok::Colon {
            return self.slice_expression();
        }
        let Tok::Number(n) = self.peek(0).tok else {
            return Err(self.unexpected("a number"));
        };
        self.advance();
        self.expect(&Tok::RBracket, "']'")?;
        Ok(Node::Index(n))
    }

    fn slice_expression(&mut self) -> Result<Node, ParseError> {
        let mut parts: [Option<i64>; 3] = [None, None, None];
        let mut idx = 0;
        loop {
            match self.peek(0).tok {
                Tok::RBracket => break,
                Tok::Colon if idx < 2 => {
                    idx += 1;
                    self.advance();
                }
                Tok::Number(n) if parts[idx].is_none() => {
                    parts[idx] = Some(n);
                    self.advance();
                }
                _ => {
                    let expected = if idx < 2 {
                        "a number, ':' or ']'"
                    } else {
                        "a number or ']'"
                    };
                    return Err(self.unexpected(expected));
                }
            }
        }
        self.advance(); // ']'
        Ok(Node::Slice {
            start: parts[0],
            stop: parts[1],
            step: parts[2],
        })
    }

    fn project_if_slice(&mut self, left: Node, index: Node) -> Result<Node, ParseError> {
        let is_slice = matches!(index, Node::Slice { .. });
        let indexed = chain(left, index);
        if is_slice {
            let rhs = self.projection_rhs(binding_power(&Tok::Star))?;
            Ok(Node::Projection {
                lhs: Box::new(indexed),
                rhs: Box::new(rhs),
            })
        } else {
            Ok(indexed)
        }
    }

    fn multi_select_list(&mut self) -> Result<Node, ParseError> {
        let mut items = Vec::new();
        loop {
            items.push(self.expression(0)?);
            match self.peek(0).tok {
                Tok::RBracket => {
                    self.advance();
                    break;
                }
                Tok::Comma => self.advance(),
                _ => return Err(self.unexpected("',' or ']'")),
            }
        }
        Ok(Node::MultiList(items))
    }

    fn multi_select_hash(&mut self) -> Result<Node, ParseError> {
        let mut pairs = Vec::new();
        loop {
            let key = match &self.peek(0).tok {
                Tok::Ident(k) | Tok::QuotedIdent(k) => k.clone(),
                _ => return Err(self.unexpected("an identifier (a key)")),
            };
            self.advance();
            self.expect(&Tok::Colon, "':'")?;
            let value = self.expression(0)?;
            pairs.push((key, value));
            match self.peek(0).tok {
                Tok::RBrace => {
                    self.advance();
                    break;
                }
                Tok::Comma => self.advance(),
                _ => return Err(self.unexpected("',' or '}'")),
            }
        }
        Ok(Node::MultiHash(pairs))
    }

    fn projection_rhs(&mut self, bp: u8) -> Result<Node, ParseError> {
        let tok = &self.peek(0).tok;
        if binding_power(tok) < PROJECTION_STOP {
            return Ok(Node::Identity);
        }
        match tok {
            Tok::LBracket | Tok::Filter => self.expression(bp),
            Tok::Dot => {
                self.advance();
                self.dot_rhs(bp)
            }
            _ => Err(self.unexpected("'.', '[' or '[?'")),
        }
    }

    fn dot_rhs(&mut self, bp: u8) -> Result<Node, ParseError> {
        match self.peek(0).tok {
            Tok::Ident(_) | Tok::QuotedIdent(_) | Tok::Star => self.expression(bp),
            Tok::LBracket => {
                self.advance();
                self.multi_select_list()
            }
            Tok::LBrace => {
                self.advance();
                self.multi_select_hash()
            }
            _ => Err(self.unexpected("an identifier, '*', '[' or '{' after '.'")),
        }
    }
}

/// `left` then `right` as a flattened subexpression chain.
fn chain(left: Node, right: Node) -> Node {
    match left {
        Node::Subexpr(mut items) => {
            items.push(right);
            Node::Subexpr(items)
        }
        other => Node::Subexpr(vec![other, right]),
    }
}
